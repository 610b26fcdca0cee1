"""The command line: parse options, build a config, call the library, show the result. The only code that prints."""

import os
import sys

EXIT_INTERRUPTED = 130  # charrnn.cli.errors's, here before anything else is imported


def main() -> None:
    """The console script. The app is imported inside, so that a Ctrl-C while its modules load
    ends in the same one line and exit code as a Ctrl-C anywhere else."""
    try:
        from charrnn.cli.app import main as run

        run()
    except KeyboardInterrupt:
        if os.environ.get("DEBUG", "") not in ("", "0"):
            raise
        sys.stderr.write("charrnn: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
