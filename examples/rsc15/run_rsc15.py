"""Train and evaluate the published RSC15 configurations on the files of ``preprocess.py``.

    python examples/rsc15/preprocess.py yoochoose-clicks.dat data/rsc15
    python examples/rsc15/run_rsc15.py data/rsc15                        # paramfiles/rsc15_xe.txt
    python examples/rsc15/run_rsc15.py data/rsc15 cikm2018_rsc15_bprmax cikm2018_rsc15_xe --device gpu

Each configuration is a parameter file, by name (``paramfiles/<name>.txt``) or by path. It is
trained on ``rsc15_train_full.txt`` and evaluated on ``rsc15_test.txt`` (``--tune``: on
``rsc15_train_tr.txt`` / ``rsc15_train_valid.txt``) through the command line (``run.py``), which
prints the training time and Recall@N / MRR@N for N = 1, 5, 10, 20. The result the parameter
file reports, if any, is printed first for comparison.
"""
import argparse
from pathlib import Path

from gru4rec_lib import cli

PARAMFILES = Path(__file__).resolve().parents[2] / "paramfiles"
FILES = {False: ("rsc15_train_full.txt", "rsc15_test.txt"),  # (train, test) by --tune
         True: ("rsc15_train_tr.txt", "rsc15_train_valid.txt")}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", metavar="DATA_DIR", help="output folder of preprocess.py")
    parser.add_argument("configs", nargs="*", metavar="CONFIG", default=["rsc15_xe"],
                        help="parameter files: names in paramfiles/ or paths (default: rsc15_xe)")
    parser.add_argument("--tune", action="store_true", help="train_tr / train_valid instead of train_full / test")
    parser.add_argument("-ps", "--params", default="", help="parameters overriding the file's, e.g. n_epochs=1")
    parser.add_argument("--device", choices=["cpu", "gpu"], help="compute device (default: what JAX finds)")
    parser.add_argument("--save-dir", help="save each model as <save-dir>/<config>.npz")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def config_path(config):
    """A parameter file by path, or by name in paramfiles/."""
    path = Path(config)
    return path if path.suffix == ".txt" or path.exists() else PARAMFILES / f"{config}.txt"


def reported(path):
    """The '# Reported ...' comment of a parameter file, or None."""
    lines = Path(path).read_text(encoding="utf-8").splitlines() if Path(path).is_file() else []
    return next((line.lstrip("# ") for line in lines if line.startswith("# Reported")), None)


def main(argv=None):
    args = parse_args(argv)
    train, test = (str(Path(args.data_dir) / name) for name in FILES[args.tune])
    for config in args.configs:
        path = config_path(config)
        print(f"== {path.stem}" + (f" ({reported(path)})" if reported(path) else ""), flush=True)
        argv = [train, "-pf", str(path), "-t", test, "-m", "1", "5", "10", "20"]
        argv += ["-ps", args.params] if args.params else []
        argv += ["--device", args.device] if args.device else []
        argv += ["-s", str(Path(args.save_dir) / f"{path.stem}.npz")] if args.save_dir else []
        argv += ["-q"] if args.quiet else []
        cli.main(argv)
    return 0


if __name__ == "__main__":
    main()
