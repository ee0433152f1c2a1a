"""From a checkout: ``python run.py ...`` is the installed ``gru4rec`` command (see gru4rec_lib/cli.py)."""
import sys

from gru4rec_lib.cli import main

if __name__ == "__main__":
    sys.exit(main())
