"""From a checkout: ``python paropt.py ...`` is the installed ``gru4rec-tune`` command (see gru4rec_lib/tune.py)."""
import sys

from gru4rec_lib.tune import main

if __name__ == "__main__":
    sys.exit(main())
