"""From a checkout: ``python run.py ...`` is the installed ``gru4rec`` command (see gru4rec_lib/cli.py)."""
from gru4rec_lib.launch import command

if __name__ == "__main__":
    command()
