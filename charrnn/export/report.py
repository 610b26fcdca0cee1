"""What an export wrote and how it was checked: the one record every export format returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class ExportReport:
    """The files an export wrote, their total size, and the check it ran on them.

    ``paths`` lists every file written (the model first, then anything beside it);
    ``size_bytes`` is their total size on disk; ``check`` is one line saying what was compared
    with the checkpoint and what came out (for example "max |Δp| 3.1e-07 over 64 characters").
    """

    paths: list[Path]
    size_bytes: int
    check: str
