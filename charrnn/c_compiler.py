"""The system's C compiler, for the C export and the native generation kernel."""

from __future__ import annotations

import os
import shutil


def find_compiler() -> str | None:
    """The C compiler to use: ``$CC``, else the first of cc, gcc and clang on the PATH."""
    named = os.environ.get("CC")
    if named:
        return shutil.which(named)
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None
