"""Accuracy benchmark: train and evaluate GRU4Rec on real session data sets, several seeds.

For every data set: read the train and test files once, then for each seed fit
``GRU4Rec(**paramfile, seed=seed)`` (``--epochs`` overrides ``n_epochs``), evaluate Recall@N and
MRR@N on the test file (all items ranked) and print one row per run, the mean over the
seeds and, where the configuration has a known reference result, the reference and our relative
difference. Not a test: it takes minutes per data set on a CPU.

Usage (from the repository root; data sets are never copied into the repository)::

    python -m bench.accuracy rsc15_100k --epochs 10 --seeds 1 2 3 --json out/acc.json
    python -m bench.accuracy diginetica --epochs 1 --data-dir DATA_DIR
    python -m bench.accuracy rsc15_100k --train rsc15_100k=my_train.tsv --paramfile rsc15_100k=p.txt

Defaults per data set (each overridable with ``--train/--test/--paramfile NAME=PATH``):

==============  ============================  ==========  =================================
name            train                         test        parameter file
==============  ============================  ==========  =================================
rsc15_100k      rsc15_100k/train_full.tsv     test.tsv    paramfiles/rsc15_xe_authors.txt
diginetica      diginetica/train.tsv          test.tsv    paramfiles/diginetica_bprmax.txt
yoochoose1_64   yoochoose1_64/train.tsv       test.tsv    paramfiles/yoochoose_xe.txt
==============  ============================  ==========  =================================

Any other NAME works when ``--train``, ``--test`` and ``--paramfile`` are all given for it.
"""
import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import evaluation
import gru4rec
from gru4rec_lib import params as paramtext
from gru4rec_lib import sessiondata
from gru4rec_lib.cli import configure_logging

logger = logging.getLogger("gru4rec.bench.accuracy")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"
CUTOFFS = (1, 5, 10, 20)
DATASETS = {  # name -> (train file, test file, parameter file); files relative to --data-dir/name
    "rsc15_100k": ("train_full.tsv", "test.tsv", ROOT / "paramfiles" / "rsc15_xe_authors.txt"),
    "diginetica": ("train.tsv", "test.tsv", ROOT / "paramfiles" / "diginetica_bprmax.txt"),
    "yoochoose1_64": ("train.tsv", "test.tsv", ROOT / "paramfiles" / "yoochoose_xe.txt"),
}
# Known results, keyed by (data set, parameter file name, n_epochs): {"recall"/"mrr": {N: value}}.
REFERENCE = {
    # the authors' reference implementation run on this exact 100k RSC15 split (mean of seeds)
    ("rsc15_100k", "rsc15_xe_authors.txt", 10): {
        "source": "reference implementation on rsc15_100k",
        "recall": {1: 0.2366, 5: 0.5068, 10: 0.6067, 20: 0.6812},
        "mrr": {5: 0.3391, 10: 0.3525, 20: 0.3578}},
    ("diginetica", "diginetica_bprmax.txt", 1): {
        "source": "reference implementation on this diginetica split, 1 epoch",
        "recall": {20: 0.4812}, "mrr": {20: 0.1572}},
    # the reference README's tables (their own preprocessing of the full data sets)
    ("diginetica", "diginetica_bprmax.txt", 10): {
        "source": "reference README (own Diginetica split)", "recall": {20: 0.4995}, "mrr": {20: 0.1542}},
    ("yoochoose1_64", "yoochoose_xe.txt", 10): {
        "source": "reference README (full Yoochoose, not the 1/64 split)",
        "recall": {20: 0.6789}, "mrr": {20: 0.3024}},
}


# ---------------------------------------------------------------- arguments
def _assignments(values, flag):
    """['name=path', ...] -> {name: path}; argparse.ArgumentTypeError-like ValueError if malformed."""
    result = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} {value!r}: expected NAME=PATH, e.g. {flag} rsc15_100k=train.tsv")
        result[name] = path
    return result


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="*", default=["rsc15_100k"], metavar="NAME",
                        help=f"data sets to run (default: rsc15_100k; known: {', '.join(DATASETS)})")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help=f"folder holding one sub-folder per data set (default: {DEFAULT_DATA_DIR})")
    parser.add_argument("--train", action="append", metavar="NAME=PATH", help="training file of NAME")
    parser.add_argument("--test", action="append", metavar="NAME=PATH", help="test file of NAME")
    parser.add_argument("--paramfile", action="append", metavar="NAME=PATH", help="parameter file of NAME")
    parser.add_argument("-ps", "--params", default="", metavar="TEXT",
                        help="extra parameters for every data set, 'name=value,...' (override the files)")
    parser.add_argument("--epochs", type=int, help="override n_epochs of the parameter files")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="model seeds (default: 1)")
    parser.add_argument("-m", "--cutoffs", type=int, nargs="+", default=list(CUTOFFS),
                        help="cut-offs N of Recall@N and MRR@N (default: 1 5 10 20)")
    parser.add_argument("--eval-batch", type=int, default=512, help="parallel test sessions (default: 512)")
    parser.add_argument("--device", choices=["cpu", "gpu"], help="compute device (default: what JAX finds)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every run and the means here")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def resolve_datasets(args):
    """[(name, train path, test path, parameter file)] from the defaults and the overrides."""
    overrides = {flag: _assignments(getattr(args, flag), f"--{flag}") for flag in ("train", "test", "paramfile")}
    unknown = {name for given in overrides.values() for name in given} - set(args.datasets)
    if unknown:
        raise ValueError(f"--train/--test/--paramfile name {sorted(unknown)} not among the data sets "
                         f"to run {args.datasets}")
    runs = []
    for name in args.datasets:
        train, test, paramfile = DATASETS.get(name, (None, None, None))
        paths = [overrides["train"].get(name) or (train and args.data_dir / name / train),
                 overrides["test"].get(name) or (test and args.data_dir / name / test),
                 overrides["paramfile"].get(name) or paramfile]
        if not all(paths):
            raise ValueError(f"unknown data set {name!r} (known: {', '.join(DATASETS)}): give "
                             f"--train {name}=PATH --test {name}=PATH --paramfile {name}=PATH")
        for path in paths:
            if not Path(path).is_file():
                raise ValueError(f"{name}: file not found: {path}")
        runs.append((name, *map(Path, paths)))
    return runs


# ---------------------------------------------------------------- work
def run_once(train, test, model_params, seed, cutoffs, eval_batch=512):
    """Fit one model and evaluate it; returns a JSON-ready dict of metrics and timings."""
    started = time.perf_counter()
    model = gru4rec.GRU4Rec(**{**model_params, "seed": seed, "show_progress": False}).fit(train)
    fit_seconds = time.perf_counter() - started
    result = evaluation.evaluate(model, test, cutoffs=cutoffs, batch_size=eval_batch)
    stats = model.epoch_stats_
    epoch_seconds = sum(s["seconds"] for s in stats)
    events = sum(s["events_per_s"] * s["seconds"] for s in stats)
    return {"seed": seed, "n_epochs": len(stats),
            "recall": result["recall"], "mrr": result["mrr"], "n_points": result["n_points"],
            "n_dropped": result["n_dropped"], "train_seconds": epoch_seconds,
            "events_per_s": events / epoch_seconds if epoch_seconds else float("nan"),
            "compile_seconds": model.compile_seconds_, "fit_seconds": fit_seconds,
            "eval_seconds": result["seconds"], "final_loss": stats[-1]["loss"] if stats else None}


def mean_run(runs):
    """Mean over seeds of every metric and timing (same keys as a run, seed 'mean')."""
    mean = {"seed": "mean", "n_epochs": runs[0]["n_epochs"]}
    for metric in ("recall", "mrr"):
        mean[metric] = {n: float(np.mean([r[metric][n] for r in runs])) for n in runs[0][metric]}
        mean[metric + "_std"] = {n: float(np.std([r[metric][n] for r in runs])) for n in runs[0][metric]}
    for key in ("train_seconds", "events_per_s", "compile_seconds", "fit_seconds", "eval_seconds"):
        mean[key] = float(np.mean([r[key] for r in runs]))
    return mean


def reference_for(name, paramfile, n_epochs):
    return REFERENCE.get((name, Path(paramfile).name, n_epochs))


# ---------------------------------------------------------------- table
def format_table(name, runs, mean, reference, cutoffs):
    """Compact text table: one row per seed, the mean, the reference and the relative difference."""
    columns = [f"R@{n}" for n in cutoffs] + [f"MRR@{n}" for n in cutoffs]
    header = f"{'':>10} " + " ".join(f"{c:>7}" for c in columns) + f" {'train s':>8} {'ev/s':>7} {'compile':>7}"
    lines = [f"== {name}", header]

    def metric_row(label, row, fmt="{:7.4f}"):
        cells = [row.get("recall", {}).get(n) for n in cutoffs] + [row.get("mrr", {}).get(n) for n in cutoffs]
        return f"{label:>10} " + " ".join(fmt.format(c) if c is not None else f"{'-':>7}" for c in cells)

    for row in runs + [mean]:
        label = f"seed {row['seed']}" if row is not mean else f"mean({len(runs)})"
        lines.append(metric_row(label, row) + f" {row['train_seconds']:8.1f} {row['events_per_s']:7.0f}"
                                             f" {row['compile_seconds']:7.1f}")
    if len(runs) > 1:
        lines.append(metric_row("std", {"recall": mean["recall_std"], "mrr": mean["mrr_std"]}))
    if reference:
        lines.append(metric_row("reference", reference))
        diff = {m: {n: mean[m][n] / v - 1 for n, v in reference[m].items() if n in mean[m]} for m in ("recall", "mrr")}
        lines.append(metric_row("rel. diff", diff, fmt="{:+7.1%}"))
        lines.append(f"reference: {reference['source']}")
    return "\n".join(lines)


def machine_line():
    import jax
    import pytensor

    return (f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}, "
            f"gru4rec {gru4rec.__version__}, pytensor {pytensor.__version__}, jax {jax.__version__}, "
            f"devices {[str(d) for d in jax.devices()]}")


def _write_json(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(handle, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def benchmark(args):
    """Run every data set and seed; print the tables; return the JSON payload."""
    defaults = gru4rec.GRU4Rec().get_params()
    extra = paramtext.parse_param_string(args.params, defaults)
    payload = {"command": getattr(args, "command", None), "machine": machine_line(),
               "datasets": []}
    print(payload["machine"])
    print(payload["command"])
    for name, train_path, test_path, paramfile in resolve_datasets(args):
        model_params = {**paramtext.read_param_file(paramfile, defaults), **extra}
        if args.epochs is not None:
            model_params["n_epochs"] = args.epochs
        if args.device is not None:
            model_params["device"] = args.device
        # read each file once, not once per seed
        train, test = sessiondata.load_events(train_path), sessiondata.load_events(test_path)
        logger.info("%s: %d train events, %d test events; %s", name, len(train), len(test), model_params)
        n_epochs = model_params.get("n_epochs", defaults["n_epochs"])
        reference = reference_for(name, paramfile, n_epochs)
        entry = {"name": name, "train": str(train_path), "test": str(test_path), "paramfile": str(paramfile),
                 "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in model_params.items()},
                 "runs": [], "mean": None, "reference": reference}
        payload["datasets"].append(entry)
        for seed in args.seeds:
            run = run_once(train, test, model_params, seed, args.cutoffs, args.eval_batch)
            entry["runs"].append(run)
            logger.info("%s seed %d: %s; %.1f s training, %.0f events/s", name, seed,
                        " ".join(f"{m}@{n} {v:.4f}" for m in ("recall", "mrr") for n, v in run[m].items()),
                        run["train_seconds"], run["events_per_s"])
            if args.json is not None:  # after each run, so that a long benchmark keeps what it finished
                _write_json(args.json, payload)
        entry["mean"] = mean_run(entry["runs"])
        print(format_table(f"{name}: {train_path.name} -> {test_path.name}, {paramfile.name}, "
                           f"{n_epochs} epochs", entry["runs"], entry["mean"], reference, args.cutoffs), flush=True)
        if args.json is not None:
            _write_json(args.json, payload)
    return payload


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    args.command = " ".join(["python -m bench.accuracy", *(sys.argv[1:] if argv is None else argv)])
    try:
        resolve_datasets(args)
    except ValueError as err:
        parser.error(str(err))
    benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
