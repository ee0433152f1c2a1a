"""Hyperparameter search for GRU4Rec with Optuna: train on one file, score on another.

Each trial fits ``GRU4Rec(**fixed, **sampled)`` on the training file in this process, evaluates
it on the validation file (all items ranked, SPEC §7) and reports the chosen metric to Optuna's
TPE sampler (seeded). The best parameters are written as a parameter file (``params.py`` format,
ready for ``run.py -pf``), and every trial goes to a JSON file, rewritten after each trial.

Usage::

    python paropt.py train_tr.tsv train_valid.tsv -sp paramspaces/xe_shared.txt \\
        -ps n_epochs=3 --metric mrr@20 -n 50 --seed 1 -o best.txt --json trials.json

Parameter space file (plain text, no code): one parameter per line, ``#`` starts a comment::

    # name        type         arguments
    layers        int          64 512 step=16      # low high, both included
    learning_rate float        0.01 0.25 log       # log: sample on a log scale (low > 0)
    momentum      float        0 0.9 step=0.05
    final_act     categorical  elu-0.5/elu-1/linear
    layers        categorical  100 100/100         # several tokens: each one is a choice
    loss          fixed        bpr-max             # not searched, always this value

The reference paropt.py's JSON spaces are read as well (a file whose first line starts with
``{``), one object per line: ``{"name": "layers", "dtype": "int", "values": [64, 512], "step": 32}``
with dtype ``int``/``float`` (``values`` = [low, high], optional ``step`` and ``log``) or
``categorical`` (``values`` = the choices); the PyTorch port's ``elu_param`` choices become
``final_act`` choices (0.5 -> elu-0.5, 0 -> linear). Its flags work too: ``-opf`` (= ``-sp``),
``-fp`` (= ``-ps``), ``-nt`` (= ``-n``), ``-pm recall|mrr`` with ``-m N`` (= ``--metric pm@N``),
``-fm N ...`` (print the best trial's ``Recall@N: x MRR@N: y`` at these cut-offs at the end).

``int`` and ``float`` take ``low high`` and optionally ``log`` or ``step=S`` (not both). A
``categorical`` with one token splits it on ``/``; with several tokens, each token is one choice
(so that ``/`` can stay inside a value, as in stacked layers). Values are typed like ``-ps`` values
(``params.py``); every name must be a GRU4Rec parameter. Precedence of fixed values, later wins:
``-pf``, ``-ps``, the space file (a parameter set in two places is logged as a warning).
"""
import argparse
import gc
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
from difflib import get_close_matches
from pathlib import Path
from typing import NamedTuple

import evaluation
import gru4rec
from . import params as paramtext
from . import sessiondata
from .cli import configure_logging

logger = logging.getLogger(__name__)
CUTOFFS = (1, 5, 10, 20)
TYPES = ("int", "float", "categorical", "fixed")


# ---------------------------------------------------------------- parameter space files
class Dimension(NamedTuple):
    """One line of a space file: how to sample (or fix) one parameter."""
    name: str
    kind: str  # one of TYPES
    low: float = None
    high: float = None
    log: bool = False
    step: float = None
    choices: tuple = ()  # categorical: the choices as text; fixed: one text value
    line: str = ""  # 'path, line n', for messages

    def suggest(self, trial):
        """Sample the value as text (the form `params.parse_param_string` types)."""
        if self.kind == "fixed":
            return self.choices[0]
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return str(trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1),
                                         log=self.log))
        value = trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        return f"{value:.12g}"  # a step grid gives 0.15000000000000002; the file should say 0.15


def _number(text, where, what):
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {what} {text!r} is not finite")
    return value


def _typed(name, text, defaults, where):
    """Type `text` as the parameter's value; ValueError naming the line if it does not fit."""
    try:
        return paramtext.parse_param_string(f"{name}={text}", defaults)[name]
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _range(name, kind, args, defaults, where):
    """Parse 'low high [log] [step=S]' of an int/float line."""
    if len(args) < 2:
        raise ValueError(f"{where}: {kind} needs 'low high', e.g. '{name} {kind} 1 10'")
    low, high = (_number(a, where, w) for a, w in zip(args[:2], ("low", "high")))
    log, step = False, None
    for option in args[2:]:
        if option == "log":
            log = True
        elif option.startswith("step="):
            step = _number(option[5:], where, "step")
            if step <= 0:
                raise ValueError(f"{where}: step must be > 0, got {option[5:]}")
        else:
            raise ValueError(f"{where}: unknown option {option!r}; use 'log' or 'step=S'")
    if not low < high:
        raise ValueError(f"{where}: low ({args[0]}) must be below high ({args[1]})")
    if log and step is not None:
        raise ValueError(f"{where}: use either 'log' or 'step=', not both (Optuna samples one or the other)")
    if log and low <= 0:
        raise ValueError(f"{where}: 'log' needs low > 0, got {args[0]}")
    if kind == "int" and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise ValueError(f"{where}: int needs integer low, high and step")
    for value in (low, high):  # a range whose ends do not type as the parameter is a wrong type
        _typed(name, str(int(value)) if kind == "int" else repr(value), defaults, where)
    return low, high, log, step


def parse_space_line(text, defaults, where="space"):
    """One space line ('name type args...') -> Dimension, or None for a blank/comment line."""
    tokens = text.partition("#")[0].split()
    if not tokens:
        return None
    if len(tokens) < 3:
        raise ValueError(f"{where}: expected 'name type arguments', e.g. 'learning_rate float 0.01 0.25 log', "
                         f"got {text.strip()!r}")
    name, kind, args = tokens[0], tokens[1], tokens[2:]
    _check_name(name, defaults, where)
    if kind not in TYPES:
        raise ValueError(f"{where}: unknown type {kind!r} for {name!r}; use one of {', '.join(TYPES)}")
    if kind == "fixed":
        if len(args) != 1:
            raise ValueError(f"{where}: fixed takes exactly one value, got {len(args)}")
        _typed(name, args[0], defaults, where)
        return Dimension(name, kind, choices=(args[0],), line=where)
    if kind == "categorical":
        return _categorical(name, args[0].split("/") if len(args) == 1 else args, defaults, where)
    low, high, log, step = _range(name, kind, args, defaults, where)
    return Dimension(name, kind, low, high, log, step, line=where)


JSON_KEYS = ("name", "dtype", "values", "step", "log")


def _json_choice(value, where):
    """One categorical value of a JSON space as the text `_typed` reads."""
    try:
        return paramtext.literal_text("", value)
    except ValueError:
        raise ValueError(f"{where}: cannot use {value!r} as a choice") from None


def _elu_choices(choices, where):
    """The PyTorch port's elu_param choices as final_act choices (0 -> linear)."""
    try:
        values = [paramtext.read_elu_param(text) for text in choices]
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return [f"elu-{value:g}" if value > 0 else "linear" for value in values]


def _check_name(name, defaults, where):
    if name not in defaults:
        close = get_close_matches(str(name), defaults, n=3)
        raise ValueError(f"{where}: unknown parameter {name!r}" + (f"; did you mean {close}?" if close else ""))


def _categorical(name, choices, defaults, where):
    """A categorical Dimension from its choices as text; each must type as the parameter."""
    _check_name(name, defaults, where)
    if not choices or any(not c for c in choices) or len(set(choices)) != len(choices):
        raise ValueError(f"{where}: categorical choices must be distinct and non-empty, got {choices}")
    for choice in choices:
        _typed(name, choice, defaults, where)
    return Dimension(name, "categorical", choices=tuple(choices), line=where)


def parse_json_space_line(text, defaults, where="space"):
    """One line of the reference's JSON space -> Dimension, or None for a blank line."""
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err.msg}): {text.strip()!r}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object like {{\"name\": ..., \"dtype\": ..., \"values\": [...]}}")
    unknown = sorted(set(obj) - set(JSON_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; keys are {', '.join(JSON_KEYS)}")
    missing = [key for key in ("name", "dtype", "values") if key not in obj]
    if missing:
        raise ValueError(f"{where}: missing {missing[0]!r}")
    name, kind, values = obj["name"], obj["dtype"], obj["values"]
    if not isinstance(values, list):
        raise ValueError(f"{where}: 'values' must be a list, got {values!r}")
    if kind == "categorical":
        choices = [_json_choice(value, where) for value in values]
        if name == "elu_param":
            name, choices = "final_act", _elu_choices(choices, where)
        return _categorical(name, choices, defaults, where)
    if kind not in ("int", "float"):
        raise ValueError(f"{where}: unknown type {kind!r} for {name!r}; use int, float or categorical")
    if name == "elu_param":
        raise ValueError(f"{where}: elu_param can only be searched as categorical (its values become final_act "
                         "elu-X choices)")
    if len(values) != 2:
        raise ValueError(f"{where}: 'values' must be [low, high] for {kind}, got {values!r}")
    tokens = [name, kind, *(_json_choice(value, where) for value in values)]
    if obj.get("step") is not None:
        tokens.append(f"step={_json_choice(obj['step'], where)}")
    if obj.get("log"):
        tokens.append("log")
    return parse_space_line(" ".join(tokens), defaults, where)


def _is_json_space(lines):
    first = next((line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")), "")
    return first.startswith("{")


def read_space(path, defaults):
    """Read a parameter space file (ours, or the reference's JSON lines); returns {name: Dimension} in
    file order. ValueError names the line."""
    with open(path, encoding="utf-8") as file:
        lines = file.read().splitlines()
    parse_line = parse_json_space_line if _is_json_space(lines) else parse_space_line
    space = {}
    for number, text in enumerate(lines, 1):
        dim = parse_line(text, defaults, f"{path}, line {number}")
        if dim is None:
            continue
        if dim.name in space:
            raise ValueError(f"{dim.line}: {dim.name!r} already defined at {space[dim.name].line}")
        space[dim.name] = dim
    if not any(d.kind != "fixed" for d in space.values()):
        raise ValueError(f"{path}: no parameter to search (only fixed or empty lines)")
    return space


# ---------------------------------------------------------------- the search
def parse_metric(text):
    """'recall@20' / 'MRR@5' -> ('recall', 20) / ('mrr', 5)."""
    match = re.fullmatch(r"\s*(recall|mrr)\s*@\s*(\d+)\s*", str(text), flags=re.IGNORECASE)
    if not match or int(match.group(2)) < 1:
        raise ValueError(f"metric {text!r} is invalid: expected recall@N or mrr@N with N >= 1, e.g. mrr@20")
    return match.group(1).lower(), int(match.group(2))


def trial_params(trial, space, fixed, defaults):
    """Fixed parameters updated with one sampled value per space line, typed."""
    params = dict(fixed)
    for dim in space.values():
        params[dim.name] = _typed(dim.name, dim.suggest(trial), defaults, dim.line)
    return params


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def trial_record(trial):
    """A JSON-ready summary of one finished (or failed) Optuna trial."""
    return {"number": trial.number, "state": trial.state.name, "value": trial.value,
            "params": {k: _plain(v) for k, v in trial.user_attrs.get("params", {}).items()},
            "recall": trial.user_attrs.get("recall"), "mrr": trial.user_attrs.get("mrr"),
            "train_seconds": trial.user_attrs.get("train_seconds"),
            "fit_seconds": trial.user_attrs.get("fit_seconds"), "eval_seconds": trial.user_attrs.get("eval_seconds"),
            "epoch_losses": trial.user_attrs.get("epoch_losses"), "error": trial.user_attrs.get("error"),
            "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
            "finished": trial.datetime_complete.isoformat() if trial.datetime_complete else None}


def _objective(train, valid, space, fixed, defaults, metric, cutoffs, eval_batch):
    """Optuna objective: fit, evaluate, store the details in the trial's user attributes."""
    kind, n = metric

    def objective(trial):
        params = trial_params(trial, space, fixed, defaults)
        trial.set_user_attr("params", {k: _plain(v) for k, v in params.items()})
        logger.info("trial %d: %s", trial.number,
                    ", ".join(f"{k}={params[k]!r}" for k in space if space[k].kind != "fixed"))
        started = time.perf_counter()
        model = gru4rec.GRU4Rec(**{**params, "show_progress": False})
        try:
            model.fit(train)
        except gru4rec.ModelFitError as err:
            trial.set_user_attr("error", str(err))
            raise
        fit_seconds = time.perf_counter() - started
        result = evaluation.evaluate(model, valid, cutoffs=cutoffs, batch_size=eval_batch)
        trial.set_user_attr("recall", result["recall"])
        trial.set_user_attr("mrr", result["mrr"])
        trial.set_user_attr("train_seconds", sum(s["seconds"] for s in model.epoch_stats_))
        trial.set_user_attr("fit_seconds", fit_seconds)
        trial.set_user_attr("eval_seconds", result["seconds"])
        trial.set_user_attr("epoch_losses", [float(x) for x in model.epoch_losses_])
        del model
        gc.collect()  # drop the compiled functions and device buffers before the next trial
        return result[kind][n]
    return objective


def tune(train, valid, space, fixed=None, metric="recall@20", n_trials=20, seed=None, timeout=None,
         eval_batch=512, callback=None, extra_cutoffs=()):
    """Search `space` (from `read_space`) on `train`, scoring on `valid`; returns the Optuna study.

    Parameters
    ----------
    train, valid : DataFrame or path
        Training and validation events (validation items unknown to a model are dropped).
    space : dict name -> Dimension
    fixed : dict, optional
        Typed GRU4Rec parameters for every trial (from `params.read_param_file` / `parse_param_string`);
        the space's lines override them.
    metric : str, default 'recall@20'
        'recall@N' or 'mrr@N', maximised.
    n_trials : int, default 20
    seed : int or None
        Seeds Optuna's TPE sampler (the model's own seed comes from `fixed`, default 42).
    timeout : float or None
        Stop starting new trials after this many seconds.
    callback : callable(study, trial), optional
        Called after each trial (the command line writes its JSON there).
    extra_cutoffs : sequence of int
        Cut-offs recorded in every trial besides 1, 5, 10, 20 and the metric's.
    """
    import optuna

    defaults = gru4rec.GRU4Rec().get_params()
    kind, n = parse_metric(metric)
    cutoffs = sorted(set(CUTOFFS) | {n} | set(extra_cutoffs))
    fixed = dict(fixed or {})
    train = sessiondata.load_events(train) if not hasattr(train, "columns") else train
    valid = sessiondata.load_events(valid) if not hasattr(valid, "columns") else valid
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial instead
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    objective = _objective(train, valid, space, fixed, defaults, (kind, n), cutoffs, eval_batch)

    def report(study, trial):
        if trial.value is not None:
            logger.info("trial %d: %s %.4f (best %.4f in trial %d), %.1f s", trial.number, metric, trial.value,
                        study.best_value, study.best_trial.number, trial.duration.total_seconds())
        else:
            logger.warning("trial %d %s: %s", trial.number, trial.state.name, trial.user_attrs.get("error", ""))
        if callback is not None:
            callback(study, trial)

    study.optimize(objective, n_trials=n_trials, timeout=timeout, callbacks=[report],
                   catch=(gru4rec.ModelFitError,), gc_after_trial=False)
    return study


def best_params(study):
    """Typed parameters of the best trial, ordered as the trial had them (tuples for layers)."""
    defaults = gru4rec.GRU4Rec().get_params()
    params = study.best_trial.user_attrs["params"]
    return {k: tuple(v) if isinstance(defaults.get(k), tuple) else v for k, v in params.items()}


def summary(study, metric, space, fixed, args_line):
    """The JSON payload: settings, best trial, all trials."""
    done = [t for t in study.trials if t.value is not None]
    best = study.best_trial if done else None
    return {"command": args_line, "metric": metric, "direction": "maximize",
            "space": {name: {k: v for k, v in d._asdict().items() if k not in ("name",)} for name, d in space.items()},
            "fixed": {k: _plain(v) for k, v in fixed.items()},
            "best_trial": best.number if best else None, "best_value": best.value if best else None,
            "best_params": {k: _plain(v) for k, v in best_params(study).items()} if best else None,
            "trials": [trial_record(t) for t in study.trials]}


# ---------------------------------------------------------------- command line
def build_parser():
    parser = argparse.ArgumentParser(
        prog="gru4rec-tune", description="Tune GRU4Rec with Optuna: train on TRAIN_PATH, score on VALID_PATH.",
        epilog="Parameter space file" + __doc__.split("Parameter space file", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train", metavar="TRAIN_PATH", help="training events (e.g. train_tr)")
    parser.add_argument("valid", metavar="VALID_PATH", help="validation events (e.g. train_valid)")
    parser.add_argument("-sp", "-opf", "--space", "--optuna_parameter_file", dest="space", required=True,
                        metavar="PATH", help="parameter space file (ours, or the reference's JSON lines)")
    parser.add_argument("-pf", "--param-file", metavar="PATH", help="fixed parameters, one name=value per line")
    parser.add_argument("-ps", "-fp", "--params", "--fixed_parameters", dest="params", default="", metavar="TEXT",
                        help="fixed parameters, 'name=value,...'")
    parser.add_argument("--metric", default=None, help="maximised: recall@N or mrr@N (default recall@20)")
    parser.add_argument("-pm", "--primary_metric", dest="primary_metric", choices=["recall", "mrr"],
                        help="the reference's spelling of the metric: with -m N, --metric PM@N")
    parser.add_argument("-m", "--measure", dest="measure", type=int, metavar="N",
                        help="the cut-off of -pm (default 20)")
    parser.add_argument("-fm", "--final_measure", dest="final_measure", type=int, nargs="+", default=[],
                        metavar="N", help="at the end, print the best trial's Recall@N and MRR@N at these cut-offs")
    parser.add_argument("-n", "-nt", "--n-trials", "--ntrials", dest="n_trials", type=int, default=20,
                        help="number of trials (default 20)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the TPE sampler")
    parser.add_argument("--timeout", type=float, default=None, help="start no trial after this many seconds")
    parser.add_argument("--eval-batch", type=int, default=512, help="parallel sessions in evaluation")
    parser.add_argument("-o", "--output", metavar="PATH", default="paropt_best.txt",
                        help="best parameters as a parameter file (default paropt_best.txt)")
    parser.add_argument("--json", metavar="PATH", default="paropt_trials.json",
                        help="all trials as JSON, rewritten after each trial (default paropt_trials.json)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default="INFO")
    return parser


def _write_atomic(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    with os.fdopen(handle, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def metric_from_args(args):
    """--metric, or the reference's -pm/-m pair; ValueError if both spellings are given."""
    if args.metric is not None:
        if args.primary_metric is not None or args.measure is not None:
            raise ValueError("give either --metric or -pm/-m, not both")
        return args.metric
    return f"{args.primary_metric or 'recall'}@{20 if args.measure is None else args.measure}"


def final_lines(study, cutoffs):
    """The best trial's 'Recall@N: x MRR@N: y' lines (as the reference's final evaluation prints)."""
    best = study.best_trial
    return [f"Recall@{n}: {best.user_attrs['recall'][n]:.6f} MRR@{n}: {best.user_attrs['mrr'][n]:.6f}"
            for n in cutoffs]


def fixed_params(args, space, defaults):
    """-pf, then -ps, then the space's fixed lines; warn where a later source overrides an earlier one."""
    fixed = paramtext.read_param_file(args.param_file, defaults) if args.param_file else {}
    for source, values in (("-ps", paramtext.parse_param_string(args.params, defaults)),
                           (args.space, {n: _typed(n, d.choices[0], defaults, d.line)
                                         for n, d in space.items() if d.kind == "fixed"})):
        overridden = sorted(set(fixed) & set(values))
        if overridden:
            logger.warning("%s overrides %s", source, ", ".join(overridden))
        fixed.update(values)
    searched = sorted(set(fixed) & {n for n, d in space.items() if d.kind != "fixed"})
    if searched:
        logger.warning("searched in %s, so the fixed value is ignored: %s", args.space, ", ".join(searched))
    return {k: v for k, v in fixed.items() if k not in searched}


def main(argv=None):
    """Run the search from the command line; returns 0 (usage errors exit 2, failures exit 1)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    defaults = gru4rec.GRU4Rec().get_params()
    try:
        args.space = paramtext.bundled_file(args.space, "paramspaces")
        if args.param_file is not None:
            args.param_file = paramtext.bundled_file(args.param_file, "paramfiles")
    except ValueError as err:
        parser.error(str(err))
    if args.n_trials < 1:
        parser.error(f"-n must be a positive integer, got {args.n_trials}")
    for flag, path in (("TRAIN_PATH", args.train), ("VALID_PATH", args.valid), ("-sp", args.space),
                       ("-pf", args.param_file)):
        if path is not None and not Path(path).is_file():
            parser.error(f"{flag} file not found: {path}")
    for flag, path in (("-o", args.output), ("--json", args.json)):
        if not Path(path).resolve().parent.is_dir():
            parser.error(f"{flag} {path}: folder {Path(path).parent} does not exist")
    if any(n < 1 for n in args.final_measure):
        parser.error(f"-fm: cut-offs must be positive integers, got {args.final_measure}")
    try:
        args.metric = metric_from_args(args)
        parse_metric(args.metric)
        space = read_space(args.space, defaults)
        fixed = fixed_params(args, space, defaults)
    except ValueError as err:
        parser.error(str(err))
    command = " ".join(["gru4rec-tune", *(sys.argv[1:] if argv is None else argv)])

    def save_json(study, trial):
        _write_atomic(args.json, json.dumps(summary(study, args.metric, space, fixed, command), indent=1) + "\n")

    try:
        study = tune(args.train, args.valid, space, fixed, args.metric, args.n_trials, args.seed, args.timeout,
                     args.eval_batch, callback=save_json, extra_cutoffs=args.final_measure)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        parser.exit(1, f"gru4rec-tune: error: {err}\n")
    if not any(t.value is not None for t in study.trials):
        parser.exit(1, f"gru4rec-tune: error: no trial finished (see {args.json})\n")
    best = study.best_trial
    comment = (f"best of {len(study.trials)} trials by paropt: {args.metric} {best.value:.6f} on {args.valid} "
               f"(trial {best.number})\n{command}")
    _write_atomic(args.output, paramtext.format_param_file(best_params(study), comment=comment))
    for line in final_lines(study, args.final_measure):
        print(line)
    logger.info("best %s %.4f (trial %d); parameters written to %s, trials to %s", args.metric, best.value,
                best.number, args.output, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
