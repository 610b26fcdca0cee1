"""The size of what an export wrote. Where it writes is checked, and written whole, by
charrnn.outputs."""

from __future__ import annotations

from pathlib import Path


def total_size(paths: list[Path]) -> int:
    return sum(Path(p).stat().st_size for p in paths)
