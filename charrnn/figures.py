"""Writing a matplotlib figure to the file a user named, for every command that draws one
(`charrnn plot`, `charrnn gradients`, `charrnn inspect`): the same name rules and the same
one-line answers when the file cannot be written. Imports no matplotlib itself."""

from __future__ import annotations

from pathlib import Path

from charrnn.errors import CheckpointError, ConfigError


def save_figure(fig, path: Path, plt, option: str, dpi: int) -> Path:
    """Save ``fig`` to ``path`` (``.png`` added to a name without an extension, as savefig
    does; the caller reports the name returned) and close it. ``option`` names the option
    that gave the path, for the message about a format matplotlib cannot draw."""
    path = Path(path)
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    try:
        fig.savefig(path, dpi=dpi)
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror}") from None
    except ValueError:  # "Format 'txt' is not supported"
        raise ConfigError(f"{option} {path}: cannot draw a {path.suffix} file; name a .png, .svg or .pdf") from None
    finally:
        plt.close(fig)
    return path
