"""Command line: train, save, load and evaluate GRU4Rec (or a baseline) on event files.

Examples::

    gru4rec train.tsv -pf paramfiles/rsc15_xe.txt -t test.tsv -m 1 5 10 20 -s model.npz
    gru4rec -l model.npz -t test.tsv -e conservative
    gru4rec model.npz -l -t test.tsv -m 20 -pm mrr -lpm
    gru4rec new.tsv -l model.npz --retrain -ps n_epochs=1 -s model2.npz
    gru4rec train.tsv --model vsknn -ps k=200 -t test.tsv

The reference run.py's habits work as they are: the model path first with a bare ``-l``, its
Python parameter files (``-pf best.py``), ``-ss`` (sample store size), ``-d cuda:0``, ``-pm`` with
``-lpm``, and its long option names (``--parameter_file``, ``--load_model``, ...).

Results go to stdout, for each test file one line per cut-off, then one line of counts with the
file last::

    Recall@20: 0.681234 MRR@20: 0.357812
    points: 71222 dropped: 0 seconds: 3.21 file: test.tsv

With ``-lpm``, a line ``PRIMARY METRIC: 0.6812345...`` follows: the ``-pm`` metric (recall or
mrr) at the first ``-m`` cut-off (at 20 without ``-m``, the authors' default), for scripts.

Progress and the per-epoch lines go to stderr through ``logging``. Usage errors exit with code 2
(argparse), failures while training or evaluating with code 1; both print ``gru4rec: error: ...``.
`main(argv)` runs in-process; `run(args, params)` does the work and raises instead of exiting;
`command()`, the ``gru4rec`` program, runs `main` and ends the process (`end_process`).
"""
import argparse
import atexit
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
from . import callbacks
from . import plots
import evaluation
import gru4rec
from . import params as paramtext

logger = logging.getLogger(__name__)

BASELINES = {"pop": baselines.Pop, "sessionpop": baselines.SessionPop, "itemknn": baselines.ItemKNN,
             "sknn": baselines.SKNN, "vsknn": baselines.VSKNN, "markov": baselines.MarkovChain}
DATA_SUFFIXES = (".tsv", ".txt", ".csv", ".parquet", ".pkl", ".pickle")
PATH_FIRST = "<the path before -l>"  # const of a bare -l
FAILURES = (ValueError, KeyError, TypeError, FileNotFoundError, RuntimeError)
FLAGS = {"session_key": "-sk", "item_key": "-ik", "time_key": "-tk", "user_key": "-uk"}

EPILOG = """\
data files: .tsv/.txt (tab-separated), .csv, .parquet, or .pkl/.pickle (a pickled pandas
DataFrame). Loading a pickle runs code from the file: pickles are refused unless --allow-pickle
is given; only use pickles you trust.

parameters (-ps/-pf): name=value items typed against the model's defaults, e.g.
  -ps "loss=cross-entropy,layers=100/100,constrained_embedding=True"
A parameter file holds one name=value per line, '#' starts a comment; -ps overrides -pf.
A -pf file ending in .py is read in the reference implementations' format
(gru4rec_params = OrderedDict([...])) as data, never run; their names (elu_param) are mapped.
With --model other than gru4rec, the names are that baseline's constructor arguments.

output: per test file, a line 'Recall@N: x MRR@N: y' per cut-off, then
'points: n dropped: d seconds: s file: path'; with -lpm also 'PRIMARY METRIC: v'.
"""


# ---------------------------------------------------------------- arguments
def build_parser():
    parser = argparse.ArgumentParser(
        prog="gru4rec", description="Train, save, load and evaluate GRU4Rec session-based recommenders.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train", nargs="?", metavar="TRAIN_PATH",
                        help="training events; with -l only together with --retrain")
    parser.add_argument("-ps", "--params", "--parameter_string", dest="params", metavar="TEXT", default="",
                        help="model parameters: 'name=value,name=value,...'")
    parser.add_argument("-pf", "--param-file", "--parameter_file", dest="param_file", metavar="PATH",
                        help="model parameters, one name=value per line (or a reference .py file)")
    parser.add_argument("-s", "--save", "--save_model", dest="save", metavar="PATH",
                        help="save the trained model here (.npz; gru4rec only)")
    parser.add_argument("-l", "--load", "--load_model", dest="load", metavar="PATH", nargs="?", const=PATH_FIRST,
                        help="load a model saved with -s (gru4rec only); a bare -l loads the first path "
                             "given (MODEL_PATH -l)")
    parser.add_argument("--retrain", action="store_true",
                        help="continue training the -l model on TRAIN_PATH (new items are added)")
    parser.add_argument("-t", "--test", nargs="+", metavar="TEST_PATH", default=[],
                        help="evaluate on these event files")
    parser.add_argument("-m", "--measure", dest="measure", nargs="+", type=int, metavar="N", default=None,
                        help="cut-offs N of Recall@N and MRR@N (default: 1 5 10 20; -lpm then reports @20, "
                             "as the authors' default -m 20)")
    parser.add_argument("-e", "--eval-type", "--eval_type", dest="eval_type", choices=evaluation.MODES, default="standard",
                        help="how ties with the target's score count (default: standard)")
    parser.add_argument("--eval-batch", type=int, default=512, metavar="B",
                        help="parallel sessions during evaluation (default: 512)")
    parser.add_argument("-pm", "--primary-metric", "--primary_metric", dest="primary_metric",
                        choices=["recall", "mrr"], default="recall",
                        help="the metric -lpm prints and --patience watches (default: recall)")
    parser.add_argument("-lpm", "--log-primary-metric", "--log_primary_metric", dest="log_primary_metric",
                        action="store_true",
                        help="after each test file print 'PRIMARY METRIC: v', the -pm metric at the first -m "
                             "cut-off (at 20 without -m)")
    parser.add_argument("-sk", "--session-key", "--session_key", dest="session_key", metavar="NAME",
                        help="session id column (default: SessionId)")
    parser.add_argument("-ik", "--item-key", "--item_key", dest="item_key", metavar="NAME",
                        help="item id column (default: ItemId)")
    parser.add_argument("-tk", "--time-key", "--time_key", dest="time_key", metavar="NAME",
                        help="time column (default: Time)")
    parser.add_argument("-uk", "--user-key", metavar="NAME",
                        help="user id column: train on user histories (sessions joined per user)")
    parser.add_argument("--history", metavar="PATH",
                        help="with a user-history model: continue each user's test sequence from the "
                             "state after their events in PATH (default: TRAIN_PATH; 'none': start from zero)")
    parser.add_argument("--model", choices=["gru4rec", *BASELINES], default="gru4rec",
                        help="model to train (default: gru4rec)")
    parser.add_argument("-g", "--gru4rec_model", dest="gru4rec_file", choices=["gru4rec", "gru4rec_pytorch"],
                        help="the authors' choice of their GRU4Rec file: either name means this GRU4Rec")
    parser.add_argument("-d", "--device", dest="device", metavar="DEVICE",
                        help="compute device: cpu, gpu (also cuda, cuda:0; default: what JAX finds)")
    parser.add_argument("-ss", "--sample-store-size", "--sample_store_size", dest="sample_store", type=int,
                        metavar="N", help="negative samples drawn ahead (GRU4Rec's sample_store; default 10000000)")
    parser.add_argument("--compilation-cache", metavar="DIR",
                        help="keep compiled XLA programs in DIR between runs (default: on, in "
                             "$XDG_CACHE_HOME/gru4rec/jax or ~/.cache/gru4rec/jax; 'off': no cache)")
    parser.add_argument("--valid", metavar="PATH",
                        help="validation events: Recall/MRR at the -m cut-offs after every epoch (gru4rec only)")
    parser.add_argument("--patience", type=int, metavar="N",
                        help="with --valid: stop training when the -pm metric (Recall by default) at the "
                             "largest -m cut-off has not improved for N epochs")
    parser.add_argument("--plot-curves", metavar="PATH.png",
                        help="write the learning curves (training loss, and with --valid the validation "
                             "Recall/MRR) per epoch as PNG (needs matplotlib: pip install 'gru4rec[plot]')")
    parser.add_argument("--seed", type=int, help="random seed of GRU4Rec (overrides seed= in -ps/-pf)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="read .pkl/.pickle data files (reading a pickle runs code from it: trusted files only)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default="INFO",
                        help="logging level on stderr (default: INFO)")
    return parser


def model_path_first(parser, args):
    """The reference's habit `MODEL_PATH -l`: a bare -l loads the positional path."""
    if args.load is not PATH_FIRST:
        return
    if args.train is None:
        parser.error("a bare -l loads the path given before it: MODEL_PATH -l (or give -l MODEL_PATH)")
    args.load, args.train = args.train, None


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
    _check_validation(parser, args)
    if args.load is not None and args.train is None and not args.test and args.save is None:
        parser.error("nothing to do with -l MODEL alone: add -t TEST_PATH to evaluate it, TRAIN_PATH --retrain "
                     "to continue training it, or -s PATH to save a copy")
    # the cut-off -lpm reports: the first one given, else the authors' default -m 20
    args.primary_cutoff = args.measure[0] if args.measure else 20
    args.measure = args.measure or [1, 5, 10, 20]
    if any(n < 1 for n in args.measure):
        parser.error(f"-m: cut-offs must be positive integers, got {args.measure}")
    if args.eval_batch < 1:
        parser.error(f"--eval-batch must be a positive integer, got {args.eval_batch}")
    if args.sample_store is not None and args.sample_store < 0:
        parser.error(f"-ss must be an integer >= 0, got {args.sample_store}")
    if args.device is not None:
        try:
            args.device = paramtext.device_name(args.device)
            backend.resolve_device(args.device)
        except ValueError as err:
            parser.error(f"--device {args.device}: {err}")


def _check_validation(parser, args):
    """--valid, --patience and --plot-curves need training GRU4Rec; --patience needs --valid."""
    for flag, value in (("--valid", args.valid), ("--patience", args.patience), ("--plot-curves", args.plot_curves)):
        if value is not None and (args.train is None or args.model != "gru4rec"):
            parser.error(f"{flag} needs training GRU4Rec (TRAIN_PATH and --model gru4rec)")
    if args.valid is not None:
        _check_file(parser, args.valid, "--valid", DATA_SUFFIXES)
        if _is_pickle(args.valid) and not args.allow_pickle:
            parser.error(f"--valid file {args.valid} is a pickle: reading it runs code from the file, so it needs "
                         "--allow-pickle (only for files you trust)")
    if args.patience is not None and (args.valid is None or args.patience < 1):
        parser.error(f"--patience needs --valid and a positive integer, got {args.patience}")
    if args.plot_curves is not None:
        if not Path(args.plot_curves).resolve().parent.is_dir():
            parser.error(f"--plot-curves {args.plot_curves}: folder {Path(args.plot_curves).parent} does not exist")
        try:
            plots.require_matplotlib()
        except ImportError as err:
            parser.error(f"--plot-curves: {err}")


def _check_modes(parser, args):
    """Train, load, or load and retrain; GRU4Rec-only flags with GRU4Rec only."""
    if args.train is None and args.load is None:
        parser.error("nothing to do: give TRAIN_PATH to train, or -l MODEL to load a saved model")
    if args.model != "gru4rec":
        for flag, value in (("-l", args.load), ("-s", args.save), ("--seed", args.seed),
                            ("--device", args.device), ("-uk", args.user_key), ("--history", args.history),
                            ("-ss", args.sample_store)):
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
             "user_key": args.user_key, "seed": args.seed,
             "device": None if args.device is None else paramtext.device_name(args.device),
             "sample_store": args.sample_store}
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
        check = validation_callback(args, model)
        hooks = {"callbacks": [check]} if check is not None else {}  # baselines take no callbacks
        if args.retrain:
            model.fit(_data(args.train), retrain=True, **hooks)
        else:
            model.fit(_data(args.train), **hooks)
        print(training_summary(model, time.perf_counter() - started))
        if getattr(args, "plot_curves", None) is not None:
            history = check.history if check is not None else model.epoch_stats_
            plots.learning_curves(history, args.plot_curves, title=f"GRU4Rec on {Path(args.train).name}"
                                  + (f", validated on {Path(args.valid).name}" if check is not None else ""))
            logger.info("learning curves written to %s", args.plot_curves)
    save_error = _save(model, args.save)
    results = []
    history = history_path(args, model)
    if history is not None:
        logger.info("evaluation continues each user's state after their events in %s", history)
    for path in args.test:
        try:
            result = evaluation.evaluate(model, _data(path), cutoffs=args.measure, mode=args.eval_type,
                                         batch_size=args.eval_batch, show_progress=not args.quiet,
                                         history=_data(history))
        except (ValueError, KeyError, TypeError) as err:  # several -t files: say which one
            raise type(err)(f"-t {path}: {err.args[0] if err.args else err}") from err
        print(format_result(result, path, args.measure))
        if args.log_primary_metric:
            print(primary_metric_line(result, args.primary_metric, args.primary_cutoff))
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


def validation_callback(args, model):
    """The per-epoch validation (and early stopping) of --valid/--patience, or None; a user-history
    model's validation users continue from their training events, as its test users do."""
    if getattr(args, "valid", None) is None:
        return None
    history = _file_or_none(args.history if args.history is not None else args.train) \
        if getattr(model, "user_key", None) is not None else None
    return callbacks.Validation(_data(args.valid), cutoffs=args.measure, metric=f"{args.primary_metric}@{max(args.measure)}",
                                patience=args.patience, mode=args.eval_type, batch_size=args.eval_batch,
                                history=_data(history))


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


def format_result(result, path, cutoffs=None):
    """'Recall@N: x MRR@N: y' lines (6 decimals, as the reference prints), one per cut-off as given
    (a repeated one too, as the reference), then the counts and the file."""
    cutoffs = result["recall"] if cutoffs is None else cutoffs
    lines = [f"Recall@{n}: {result['recall'][n]:.6f} MRR@{n}: {result['mrr'][n]:.6f}" for n in cutoffs]
    lines.append(f"points: {result['n_points']} dropped: {result['n_dropped']} "
                 f"seconds: {result['seconds']:.2f} file: {path}")
    return "\n".join(lines)


def primary_metric_line(result, metric, cutoff):
    """'PRIMARY METRIC: v' (full precision), the line the reference's tuner reads from run.py."""
    return f"PRIMARY METRIC: {float(result[metric][cutoff])!r}"


def configure_logging(level):
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    for noisy in ("jax", "pytensor"):  # backend probing and config notes at INFO
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))


def main(argv=None):
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); return 0 or exit nonzero."""
    parser = build_parser()
    args = parser.parse_args(argv)
    model_path_first(parser, args)
    if args.param_file is not None:
        try:
            args.param_file = paramtext.bundled_file(args.param_file, "paramfiles")
        except ValueError as err:
            parser.error(f"-pf {err}")
    check_args(parser, args)
    configure_logging(args.log_level)
    if args.compilation_cache and args.compilation_cache.lower() in backend.CACHE_OFF:
        backend.disable_compilation_cache()
    elif args.compilation_cache:
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


def end_process(code):
    """End this process now with exit status `code`, as the interpreter would (the exit handlers
    run: logging flushed, file locks released, temporary folders removed; the output flushed) but
    without its teardown of every imported module, which takes about 0.4 s once JAX, PyTensor
    and pandas are loaded (bench/README.md). For a program's end only: nothing runs after it."""
    atexit._run_exitfuncs()  # noqa: SLF001 (what the interpreter runs at exit, in its order)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: the interpreter ignores it too
            pass
    os._exit(code)


def command():
    """The ``gru4rec`` program: `main` on the command line's arguments, then `end_process` with
    its status (usage errors and failures exit through Python as usual)."""
    end_process(main())


if __name__ == "__main__":
    command()
