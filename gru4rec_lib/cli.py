"""Command line: train, save, load and evaluate GRU4Rec (or a baseline) on event files.

Examples::

    gru4rec train.tsv -pf paramfiles/rsc15_xe.txt -t test.tsv -m 1 5 10 20 -s model.npz
    gru4rec -l model.npz -t test.tsv -e conservative
    gru4rec new.tsv -l model.npz --retrain -ps n_epochs=1 -s model2.npz
    gru4rec train.tsv --model vsknn -ps k=200 -t test.tsv

Results go to stdout, one line per test file, as ``name: value`` pairs with the file last::

    Recall@20: 0.6812 MRR@20: 0.3578 points: 71222 dropped: 0 seconds: 3.21 file: test.tsv

Progress and the per-epoch lines go to stderr through ``logging``. Usage errors exit with code 2
(argparse), failures while training or evaluating with code 1; both print ``gru4rec: error: ...``.
`main(argv)` runs in-process; `run(args, params)` does the work and raises instead of exiting.
"""
import argparse
import inspect
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from . import backend
from . import baselines
import evaluation
import gru4rec
from . import params as paramtext

logger = logging.getLogger(__name__)

BASELINES = {"pop": baselines.Pop, "sessionpop": baselines.SessionPop, "itemknn": baselines.ItemKNN,
             "sknn": baselines.SKNN, "vsknn": baselines.VSKNN, "markov": baselines.MarkovChain}
DATA_SUFFIXES = (".tsv", ".txt", ".csv", ".parquet", ".pkl", ".pickle")
FAILURES = (ValueError, KeyError, TypeError, FileNotFoundError, RuntimeError)
FLAGS = {"session_key": "-sk", "item_key": "-ik", "time_key": "-tk", "user_key": "-uk"}

EPILOG = """\
data files: .tsv/.txt (tab-separated), .csv, .parquet, or .pkl/.pickle (a pickled pandas
DataFrame). Loading a pickle runs code from the file: pickles are refused unless --allow-pickle
is given; only use pickles you trust.

parameters (-ps/-pf): name=value items typed against the model's defaults, e.g.
  -ps "loss=cross-entropy,final_act=softmax,layers=100/100,constrained_embedding=True"
A parameter file holds one name=value per line, '#' starts a comment; -ps overrides -pf.
With --model other than gru4rec, the names are that baseline's constructor arguments.

output: one line per test file, 'Recall@N: x MRR@N: y ... points: n dropped: d seconds: s file: path'.
"""


# ---------------------------------------------------------------- arguments
def build_parser():
    parser = argparse.ArgumentParser(
        prog="gru4rec", description="Train, save, load and evaluate GRU4Rec session-based recommenders.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train", nargs="?", metavar="TRAIN_PATH",
                        help="training events; with -l only together with --retrain")
    parser.add_argument("-ps", "--params", metavar="TEXT", default="",
                        help="model parameters: 'name=value,name=value,...'")
    parser.add_argument("-pf", "--param-file", metavar="PATH",
                        help="model parameters, one name=value per line")
    parser.add_argument("-s", "--save", metavar="PATH",
                        help="save the trained model here (.npz; gru4rec only)")
    parser.add_argument("-l", "--load", metavar="PATH", help="load a model saved with -s (gru4rec only)")
    parser.add_argument("--retrain", action="store_true",
                        help="continue training the -l model on TRAIN_PATH (new items are added)")
    parser.add_argument("-t", "--test", nargs="+", metavar="TEST_PATH", default=[],
                        help="evaluate on these event files")
    parser.add_argument("-m", "--measure", nargs="+", type=int, metavar="N", default=[1, 5, 10, 20],
                        help="cut-offs N of Recall@N and MRR@N (default: 1 5 10 20)")
    parser.add_argument("-e", "--eval-type", choices=evaluation.MODES, default="standard",
                        help="how ties with the target's score count (default: standard)")
    parser.add_argument("--eval-batch", type=int, default=512, metavar="B",
                        help="parallel sessions during evaluation (default: 512)")
    parser.add_argument("-sk", "--session-key", metavar="NAME", help="session id column (default: SessionId)")
    parser.add_argument("-ik", "--item-key", metavar="NAME", help="item id column (default: ItemId)")
    parser.add_argument("-tk", "--time-key", metavar="NAME", help="time column (default: Time)")
    parser.add_argument("-uk", "--user-key", metavar="NAME",
                        help="user id column: train on user histories (sessions joined per user)")
    parser.add_argument("--history", metavar="PATH",
                        help="with a user-history model: continue each user's test sequence from the "
                             "state after their events in PATH (default: TRAIN_PATH; 'none': start from zero)")
    parser.add_argument("--model", choices=["gru4rec", *BASELINES], default="gru4rec",
                        help="model to train (default: gru4rec)")
    parser.add_argument("--device", choices=["cpu", "gpu"], help="compute device (default: what JAX finds)")
    parser.add_argument("--compilation-cache", metavar="DIR",
                        help="keep compiled XLA programs in DIR between runs (faster start-up)")
    parser.add_argument("--seed", type=int, help="random seed of GRU4Rec (overrides seed= in -ps/-pf)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="read .pkl/.pickle data files (reading a pickle runs code from it: trusted files only)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default="INFO",
                        help="logging level on stderr (default: INFO)")
    return parser


def check_args(parser, args):
    """Reject inconsistent arguments before any slow work (parser.error exits with code 2)."""
    _check_modes(parser, args)
    for path, what in ((args.train, "TRAIN_PATH"), (_file_or_none(args.history), "--history"),
                       *((path, "-t test") for path in args.test)):
        if path is not None:
            _check_file(parser, path, what, DATA_SUFFIXES)
            if _is_pickle(path) and not args.allow_pickle:
                parser.error(f"{what} file {path} is a pickle: reading it runs code from the file, so it needs "
                             "--allow-pickle (only for files you trust; or convert it to .parquet or .tsv)")
    for path, what in ((args.load, "-l model"), (args.param_file, "-pf parameter")):
        if path is not None:
            _check_file(parser, path, what, None)
    if args.save is not None:
        _check_writable(parser, args.save)
    if args.load is not None and args.train is None and not args.test and args.save is None:
        parser.error("nothing to do with -l MODEL alone: add -t TEST_PATH to evaluate it, TRAIN_PATH --retrain "
                     "to continue training it, or -s PATH to save a copy")
    if any(n < 1 for n in args.measure):
        parser.error(f"-m: cut-offs must be positive integers, got {args.measure}")
    if args.eval_batch < 1:
        parser.error(f"--eval-batch must be a positive integer, got {args.eval_batch}")
    if args.device is not None:
        try:
            backend.resolve_device(args.device)
        except ValueError as err:
            parser.error(f"--device {args.device}: {err}")


def _check_modes(parser, args):
    """Train, load, or load and retrain; GRU4Rec-only flags with GRU4Rec only."""
    if args.train is None and args.load is None:
        parser.error("nothing to do: give TRAIN_PATH to train, or -l MODEL to load a saved model")
    if args.model != "gru4rec":
        for flag, value in (("-l", args.load), ("-s", args.save), ("--seed", args.seed),
                            ("--device", args.device), ("-uk", args.user_key), ("--history", args.history)):
            if value is not None:
                parser.error(f"{flag} applies to --model gru4rec only, not {args.model}")
    if args.load is None:
        if args.retrain:
            parser.error("--retrain needs -l MODEL, the saved model to continue training")
        return
    if args.train is not None and not args.retrain:
        parser.error("TRAIN_PATH with -l: add --retrain to continue training the loaded model on it")
    if args.retrain and args.train is None:
        parser.error("--retrain needs TRAIN_PATH, the data to continue training on")
    if (args.params or args.param_file) and not args.retrain:
        parser.error("-ps/-pf set training parameters: with -l they need TRAIN_PATH and --retrain")


def _is_pickle(path):
    return Path(path).suffix.lower() in (".pkl", ".pickle")


def _check_writable(parser, path):
    """-s: the folder exists and takes a new file (one is created and removed), the target is no folder."""
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        parser.error(f"-s {path}: folder {Path(path).parent} does not exist")
    if Path(path).is_dir():
        parser.error(f"-s {path}: is a directory; give a file name such as {Path(path) / 'model.npz'}")
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".tmp-write-check-")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        parser.error(f"-s {path}: cannot write in folder {folder} ({err.strerror or err})")


def _check_file(parser, path, what, suffixes):
    if suffixes is not None and Path(path).suffix.lower() not in suffixes:
        parser.error(f"{what} file {path}: unknown suffix {Path(path).suffix!r}; "
                     f"use one of {', '.join(suffixes)}")
    if not Path(path).is_file():
        parser.error(f"{what} file not found: {path}")


def model_params(args):
    """Typed parameters from -pf, then -ps, then the flags (later ones win). ValueError if bad."""
    defaults = model_defaults(args.model)
    given = paramtext.read_param_file(args.param_file, defaults) if args.param_file else {}
    given.update(paramtext.parse_param_string(args.params, defaults))
    flags = {"session_key": args.session_key, "item_key": args.item_key, "time_key": args.time_key,
             "user_key": args.user_key, "seed": args.seed, "device": args.device}
    given.update({name: value for name, value in flags.items() if value is not None})
    if args.model == "gru4rec" and args.quiet:
        given["show_progress"] = False
    return given


def model_defaults(name):
    """Constructor defaults of a model by its --model name: they type the -ps/-pf values."""
    if name == "gru4rec":
        return gru4rec.GRU4Rec().get_params()
    signature = inspect.signature(BASELINES[name].__init__)
    return {p.name: p.default for p in signature.parameters.values() if p.name != "self"}


# ---------------------------------------------------------------- work
def run(args, params):
    """Build or load the model, train, save, evaluate and print the results.

    ``params`` comes from `model_params`. Returns the model and the evaluation results, one dict
    per test file (see `evaluation.evaluate`). Errors are raised, not turned into exits.
    """
    params = dict(params)
    if args.load is not None:
        model = gru4rec.GRU4Rec.load(args.load, device=params.pop("device", None))
        logger.info("loaded %s: %d items", args.load, model.n_items_)
        model.set_params(**params)
    else:
        model = gru4rec.GRU4Rec(**params) if args.model == "gru4rec" else BASELINES[args.model](**params)
    if params:
        logger.info("parameters: %s", ", ".join(f"{k}={v!r}" for k, v in params.items()))
    if args.train is not None:
        started = time.perf_counter()
        if args.retrain:
            model.fit(_data(args.train), retrain=True)
        else:
            model.fit(_data(args.train))
        print(training_summary(model, time.perf_counter() - started))
    save_error = _save(model, args.save)
    results = []
    history = history_path(args, model)
    if history is not None:
        logger.info("evaluation continues each user's state after their events in %s", history)
    for path in args.test:
        result = evaluation.evaluate(model, _data(path), cutoffs=args.measure, mode=args.eval_type,
                                     batch_size=args.eval_batch, show_progress=not args.quiet,
                                     history=_data(history))
        print(format_result(result, path))
        results.append(result)
    if save_error is not None:  # evaluated anyway: the results above are the trained model's
        raise RuntimeError(f"-s {args.save}: the model was not saved ({save_error})")
    return model, results


def _save(model, path):
    """Save to `path` (None: nothing to do); return the error instead of raising it."""
    if path is None:
        return None
    try:
        model.save(path)
    except (OSError, ValueError) as err:
        return err
    logger.info("saved the model to %s", path)
    return None


def _data(path):
    """A data path as the library takes it; a pickle (allowed by check_args) read here, as a frame."""
    return pd.read_pickle(path) if path is not None and _is_pickle(path) else path


def history_path(args, model):
    """The events whose end states evaluation continues from: user-history models only."""
    if getattr(model, "user_key", None) is None:
        if _file_or_none(args.history) is not None:
            raise ValueError("--history needs a model trained on user histories (-uk / user_key)")
        return None
    return _file_or_none(args.history if args.history is not None else args.train)


def _file_or_none(path):
    """A path argument where the word 'none' (any case) means no file."""
    return None if path is None or path.lower() == "none" else path


def training_summary(model, seconds):
    """One line: wall time of fit, and for GRU4Rec the epochs' loss and throughput."""
    stats = getattr(model, "epoch_stats_", None)
    if not stats:
        return f"Trained {type(model).__name__} in {seconds:.2f} s"
    epoch_seconds = sum(s["seconds"] for s in stats)
    events = sum(s["events_per_s"] * s["seconds"] for s in stats)
    batches = sum(s["batches_per_s"] * s["seconds"] for s in stats)
    epochs = f"{len(stats)} epoch" + ("s" if len(stats) > 1 else "")
    return (f"Trained {type(model).__name__}: {epochs} in {seconds:.2f} s "
            f"({epoch_seconds:.2f} s in epochs), final loss {stats[-1]['loss']:.6f}, "
            f"{events / epoch_seconds:.0f} events/s, {batches / epoch_seconds:.1f} mini-batches/s")


def format_result(result, path):
    """'Recall@N: x MRR@N: y ... points: n dropped: d seconds: s file: path' (the file last)."""
    metrics = " ".join(f"Recall@{n}: {result['recall'][n]:.4f} MRR@{n}: {result['mrr'][n]:.4f}"
                       for n in result["recall"])
    return (f"{metrics} points: {result['n_points']} dropped: {result['n_dropped']} "
            f"seconds: {result['seconds']:.2f} file: {path}")


def configure_logging(level):
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    for noisy in ("jax", "pytensor"):  # backend probing and config notes at INFO
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))


def main(argv=None):
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); return 0 or exit nonzero."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.param_file is not None:
        try:
            args.param_file = paramtext.bundled_file(args.param_file, "paramfiles")
        except ValueError as err:
            parser.error(f"-pf {err}")
    check_args(parser, args)
    configure_logging(args.log_level)
    if args.compilation_cache:
        backend.enable_compilation_cache(args.compilation_cache)
    try:
        params = model_params(args)
    except ValueError as err:
        parser.error(str(err))
    try:
        run(args, params)
    except FAILURES as err:
        if args.log_level == "DEBUG":
            logger.exception("failed")
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        for keyword, flag in FLAGS.items():  # the user typed the flag, not the Python argument
            message = message.replace(f"pass {keyword}=", f"pass {flag}")
        parser.exit(1, f"{parser.prog}: error: {message}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
