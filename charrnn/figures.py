"""Writing a matplotlib figure to the file a user named, for every command that draws one
(`charrnn plot`, `charrnn gradients`, `charrnn inspect`): the same name rules and the same
one-line answers when the file cannot be written. Imports no matplotlib itself."""

from __future__ import annotations

import os
from pathlib import Path

from charrnn.errors import CheckpointError, ConfigError
from charrnn.outputs import written_whole


def figure_path(path: Path) -> Path:
    """The file a figure named ``path`` is written to: ``.png`` added to a name without an
    extension, as savefig does, unless something is at that name already (a directory, a
    FIFO, a device): then the name stays, for the output check to refuse it as what it is.
    Output checks run on the name this returns, the one actually written."""
    path = Path(path)
    return path.with_name(path.name + ".png") if not path.suffix and not os.path.lexists(path) else path


def save_figure(fig, path: Path, plt, option: str, dpi: int) -> Path:
    """Save ``fig`` to ``figure_path(path)`` whole or not at all (a temporary file renamed
    over it) and close it; returns the name written. ``option`` names the option that gave
    the path, for the message about a format matplotlib cannot draw."""
    path = figure_path(path)
    try:
        with written_whole(path) as temporary:
            fig.savefig(temporary, dpi=dpi, format=path.suffix.lstrip(".").lower())
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror}") from None
    except ValueError:  # "Format 'txt' is not supported"
        raise ConfigError(f"{option} {path}: cannot draw a {path.suffix} file; name a .png, .svg or .pdf") from None
    finally:
        plt.close(fig)
    return path
