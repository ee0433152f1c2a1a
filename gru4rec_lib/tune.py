"""Hyperparameter search for GRU4Rec with Optuna: train on one file, score on another.

Each trial fits ``GRU4Rec(**fixed, **sampled)`` on the training file, evaluates it on the
validation file (all items ranked) and reports the chosen metric to Optuna's TPE sampler. The
best parameters are written as a parameter file (``params.py`` format, ready for ``gru4rec -pf``),
and every trial goes to a JSON file, rewritten after each trial.

The study lives in an Optuna storage (``--storage``; default a SQLite file beside ``-o``), so:
running the same command again continues it (``-n`` is the study's total: a continued study runs
only the rest); ``--workers N`` runs N processes on it; and any number of machines join by running
the same command with a shared ``--storage`` (``postgresql://user:password@host/db``, or
``journal:PATH`` on a shared file system). Trials are not lost or run twice: a trial whose worker
dies is run again with the same parameters (database storages, through Optuna's heartbeat).
With ``--pruner median`` (default) or ``hyperband`` the validation metric is measured after every
epoch and poor trials stop early, though none in its first ``--warmup`` epochs (default: a third
of ``n_epochs``); ``--patience N`` stops a trial whose metric stalls.

Usage::

    python paropt.py train_tr.tsv train_valid.tsv -sp paramspaces/xe_shared.txt \\
        -ps n_epochs=3 --metric mrr@20 -n 50 --seed 1 -o best.txt --json trials.json
    # the same study from two machines (each also with --workers 2), then its plots:
    gru4rec-tune train_tr.tsv train_valid.tsv -sp xe_shared.txt -ps n_epochs=5 -n 100 \\
        --storage postgresql://tuner:secret@dbhost/gru4rec --study-name xe1 --workers 2 --plots plots/

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
import contextlib
import gc
import hashlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from difflib import get_close_matches
from pathlib import Path
from typing import NamedTuple

import pandas as pd

import evaluation
import gru4rec
from . import callbacks, modelfile
from . import params as paramtext
from . import plots
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
parse_metric = callbacks.parse_metric
PRUNERS = ("median", "hyperband", "none")


class InvalidParams(ValueError):
    """A trial's parameters (from the space) fail the model's checks: that trial fails."""


class SurplusTrial(Exception):
    """A worker asked for a trial after the study already had all it needs; it is not run."""


def trial_params(trial, space, fixed, defaults):
    """Fixed parameters updated with one sampled value per space line, typed."""
    params = dict(fixed)
    for dim in space.values():
        params[dim.name] = _typed(dim.name, dim.suggest(trial), defaults, dim.line)
    return params


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def counted_trials(trials):
    """The trials that count towards the study's total, by number.

    Left out: trials a worker asked for after the total was reached (never run), and trials whose
    worker died (no heartbeat), which Optuna re-queues with the same parameters as a new trial.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental in Optuna since 2.8; its attribute is stable
        retried = {_retry_class().retried_trial_number(t) for t in trials} - {None}
    return sorted((t for t in trials if t.number not in retried and not t.user_attrs.get("surplus")),
                  key=lambda t: t.number)


def trial_record(trial):
    """A JSON-ready summary of one finished (or failed) Optuna trial."""
    return {"number": trial.number, "state": trial.state.name, "value": trial.value,
            "params": {k: _plain(v) for k, v in trial.user_attrs.get("params", {}).items()},
            "recall": trial.user_attrs.get("recall"), "mrr": trial.user_attrs.get("mrr"),
            "epochs": trial.user_attrs.get("epochs"), "best_epoch": trial.user_attrs.get("best_epoch"),
            "train_seconds": trial.user_attrs.get("train_seconds"),
            "fit_seconds": trial.user_attrs.get("fit_seconds"), "eval_seconds": trial.user_attrs.get("eval_seconds"),
            "epoch_losses": trial.user_attrs.get("epoch_losses"), "history": trial.user_attrs.get("history"),
            "error": trial.user_attrs.get("error"),
            "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
            "finished": trial.datetime_complete.isoformat() if trial.datetime_complete else None}


class _Objective:
    """Optuna objective: fit (validating each epoch when pruning or stopping early), store the details."""

    def __init__(self, train, valid, space, fixed, defaults, metric, cutoffs, n_trials, eval_batch, per_epoch,
                 patience, mode="standard"):
        self.train, self.valid, self.space, self.fixed, self.defaults = train, valid, space, fixed, defaults
        self.metric, self.n_trials, self.eval_batch, self.mode = metric, n_trials, eval_batch, mode
        self.per_epoch, self.patience = per_epoch or patience is not None, patience
        self.cutoffs = cutoffs

    def __call__(self, trial):
        import optuna

        below = [t for t in counted_trials(trial.study.get_trials(deepcopy=False)) if t.number < trial.number]
        if len(below) >= self.n_trials:  # another worker took the last one meanwhile
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"the study already has {self.n_trials} trials")
        params = trial_params(trial, self.space, self.fixed, self.defaults)
        trial.set_user_attr("params", {k: _plain(v) for k, v in params.items()})
        trial.set_user_attr("pid", os.getpid())
        logger.debug("trial %d: %s", trial.number, ", ".join(f"{k}={params[k]!r}" for k in self.searched()))
        started = time.perf_counter()
        model = gru4rec.GRU4Rec(**{**params, "show_progress": False})
        try:  # a space whose range reaches an invalid value fails this trial, not the study
            model.config()
        except (ValueError, TypeError) as err:
            trial.set_user_attr("error", str(err))
            logger.warning("trial %d failed: %s (check the space's ranges)", trial.number, err)
            raise InvalidParams(str(err)) from None
        past = self.train if params.get("user_key") else None  # user models continue from their training events
        check = callbacks.Validation(self.valid, self.cutoffs, self.metric, self.patience, mode=self.mode,
                                     batch_size=self.eval_batch, history=past) if self.per_epoch else None
        try:
            model.fit(self.train, callbacks=[check, _pruning_hook(trial, check)] if check else None)
        except gru4rec.ModelFitError as err:
            trial.set_user_attr("error", str(err))
            raise
        except optuna.TrialPruned:
            self._record(trial, model, check, check.history[-1], started)
            raise
        if check is None:
            result = evaluation.evaluate(model, self.valid, cutoffs=self.cutoffs, batch_size=self.eval_batch,
                                         history=past, mode=self.mode)
        else:  # with early stopping the trial's value is its best epoch's
            result = check.history[(check.best_epoch if self.patience else len(check.history)) - 1]
        self._record(trial, model, check, result, started)
        del model
        gc.collect()  # drop the compiled functions and device buffers before the next trial
        kind, n = parse_metric(self.metric)
        return result[kind][n]

    def searched(self):
        return [k for k, d in self.space.items() if d.kind != "fixed"]

    def _record(self, trial, model, check, result, started):
        trial.set_user_attr("recall", result["recall"])
        trial.set_user_attr("mrr", result["mrr"])
        trial.set_user_attr("epochs", len(model.epoch_stats_))
        trial.set_user_attr("train_seconds", sum(s["seconds"] for s in model.epoch_stats_))
        trial.set_user_attr("fit_seconds", time.perf_counter() - started)
        trial.set_user_attr("eval_seconds", sum(h["eval_seconds"] for h in check.history) if check
                            else result["seconds"])
        trial.set_user_attr("epoch_losses", [float(x) for x in model.epoch_losses_])
        if check is not None:
            trial.set_user_attr("best_epoch", check.best_epoch)
            trial.set_user_attr("history", [{k: h[k] for k in ("epoch", "loss", "recall", "mrr")}
                                            for h in check.history])


def _pruning_hook(trial, check):
    """A fit callback: report the epoch's validation metric to Optuna, stop a trial its pruner gives up."""
    import optuna

    def hook(model, stats):
        trial.report(check.history[-1]["value"], stats["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {stats['epoch']}")
        return False
    return hook


def make_pruner(pruner, warmup=0):
    """'median' / 'hyperband' / 'none' (or an Optuna pruner, returned as is) -> an Optuna pruner.

    `warmup`: epochs every trial runs before the pruner may stop it (the metric is reported once per
    epoch, numbered from 1, so the first epoch that can end a trial is ``warmup + 1``).
    """
    import optuna

    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner == "median":  # prune below the median of earlier trials at the same epoch, after 5 trials
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup + 1)
    if pruner == "hyperband":  # resource = epochs
        return optuna.pruners.HyperbandPruner(min_resource=warmup + 1, max_resource="auto")
    if pruner in ("none", None):
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner {pruner!r} is not one of {', '.join(PRUNERS)} (or an Optuna pruner)")


def default_warmup(space, fixed, defaults):
    """A third of the trials' epochs (the largest n_epochs the space allows), rounded down.

    Early epochs rank configurations poorly: in a yoochoose1_64 study of 16-epoch trials pruned from
    epoch 1 (README), the worst finished trial led after epoch 1, the second-best was below the
    median after epochs 2 and 3, and 10 trials with the learning rates of the two best were pruned
    after epoch 1: a pruner acting from epoch 1 stops the slow starters that end best.
    """
    dimension = space.get("n_epochs")
    if dimension is None:
        n_epochs = fixed.get("n_epochs", defaults["n_epochs"])
    else:
        n_epochs = int(dimension.high) if dimension.kind == "int" else max(int(c) for c in dimension.choices)
    return int(n_epochs) // 3


def open_storage(url, heartbeat=60):
    """An Optuna storage from a URL: None (in memory), 'journal:PATH', or a database URL.

    Database URLs (sqlite:///file.db, postgresql://user:password@host/db, mysql://...) get a
    heartbeat: a trial whose worker is silent for 2 x `heartbeat` seconds (killed, machine lost) is
    marked failed and queued again with the same parameters (up to twice). A journal file
    (``journal:PATH``, for a shared file system without a database server) has no heartbeat.
    """
    import optuna

    if url is None or not isinstance(url, str):
        return url  # None or an Optuna storage object
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
    if "://" not in url:
        raise ValueError(f"storage {url!r} is not a database URL (e.g. sqlite:///study.db, "
                         f"postgresql://user:password@host/db) nor journal:PATH")
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}  # wait for other writers
    retry = _retry_class()
    keyword = "failed_trial_callback" if retry is optuna.storages.RetryFailedTrialCallback else \
        "heartbeat_stale_trial_callback"  # the name from Optuna 4.9 on
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                              **{keyword: retry(max_retry=2)})
    except Exception as err:  # SQLAlchemy's many errors: missing driver, refused connection, bad URL
        raise ValueError(f"storage {url!r} cannot be opened: {type(err).__name__}: {err}") from None


def _retry_class():
    """Optuna's callback that queues a stale trial again (renamed in Optuna 4.9)."""
    import optuna

    return getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", optuna.storages.RetryFailedTrialCallback)


def settings_record(metric, space, fixed, data=None, mode="standard"):
    """What a study was made for (JSON-ready); a study is continued only with the same settings.
    `data`: {"train": events, "valid": events}, recorded by content (`data_digest`)."""
    record = {
        "metric": metric,
        "space": {name: [d.kind, d.low, d.high, d.log, d.step, list(d.choices)] for name, d in space.items()},
        "fixed": {k: _plain(v) for k, v in sorted(fixed.items())}}
    if data is not None:
        record["data"] = {name: data_digest(frame) for name, frame in data.items()}
    if mode != "standard":  # (a study made before tie modes could be chosen has no entry)
        record["mode"] = mode
    return json.loads(json.dumps(record))


def data_digest(events):
    """sha256 of loaded events' contents (columns, values, order; not the index or the file's name)."""
    digest = hashlib.sha256(json.dumps([str(c) for c in events.columns]).encode())
    digest.update(pd.util.hash_pandas_object(events, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def open_study(storage, study_name, settings, seed=None, pruner="median", worker=0):
    """Create the study, or load it if `storage` has one by that name made with the same `settings`.

    Several processes or machines may call this at once. The TPE sampler (with the constant liar
    for trials still running) is seeded with ``seed + worker`` when `seed` is given.
    """
    import optuna

    sampler = optuna.samplers.TPESampler(seed=None if seed is None else seed + worker, constant_liar=True)
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize", sampler=sampler,
                                pruner=make_pruner(pruner), load_if_exists=True)
    made_for = study.user_attrs.get("settings")
    if made_for is None:
        study.set_user_attr("settings", settings)
    elif made_for != settings:
        differ = [k for k in settings if settings[k] != made_for.get(k)]
        raise ValueError(f"study {study_name!r} in this storage was made with another {' and '.join(differ)}; "
                         f"to start a new search give another --study-name or --storage")
    return study


def run_trials(study, objective, n_trials, timeout=None, callback=None):
    """Run trials of `study` in this process until it has `n_trials` counted trials in all.

    Any number of processes can run this on the same study: each asks Optuna for the next trial,
    and a trial asked for once the total is reached is recorded as surplus and not run. When the
    storage has a heartbeat, the call also waits for trials still running elsewhere, and reruns
    those whose worker died; so a finished call means a finished study.
    """
    import optuna
    from optuna.trial import TrialState

    started = time.monotonic()
    heartbeat = getattr(study._storage, "get_heartbeat_interval", lambda: None)()
    while timeout is None or time.monotonic() - started < timeout:
        if heartbeat:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        counted = counted_trials(study.get_trials(deepcopy=False))
        if len(counted) < n_trials or any(t.state == TrialState.WAITING for t in counted):
            study.optimize(objective, n_trials=1, catch=(gru4rec.ModelFitError, SurplusTrial, InvalidParams),
                           callbacks=[callback] if callback else None, gc_after_trial=False)
        elif heartbeat and any(t.state == TrialState.RUNNING for t in counted):
            time.sleep(min(heartbeat, 5))
        else:
            break
    return study


def tune(train, valid, space, fixed=None, metric="recall@20", n_trials=20, seed=None, timeout=None,
         eval_batch=512, callback=None, storage=None, study_name="gru4rec", pruner="median", patience=None,
         heartbeat=60, worker=0, extra_cutoffs=(), warmup=None, allow_pickle=False, mode="standard"):
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
        Trials of the whole study, all workers together: a continued study runs only the rest.
    seed : int or None
        Seeds Optuna's TPE sampler, with ``seed + worker`` (the model's seed comes from `fixed`).
    timeout : float or None
        Stop starting new trials in this process after this many seconds.
    callback : callable(study, trial), optional
        Called after each trial of this process (the command line writes its JSON there).
    storage : None, str or Optuna storage
        None: in memory, this process only. A database URL (``sqlite:///tune.db``,
        ``postgresql://user:password@host/db``) or ``journal:PATH``: the study is kept there,
        continued by the next call with the same `study_name`, and shared by every process and
        machine that runs trials on it at the same time (see `open_storage`).
    study_name : str, default 'gru4rec'
    pruner : {'median', 'hyperband', 'none'} or an Optuna pruner
        Stops trials whose validation metric after an epoch is poor compared with earlier trials;
        any pruner but 'none' evaluates on `valid` after every epoch.
    patience : int or None
        Early stopping inside each trial (see `callbacks.Validation`); the trial's value is then
        its best epoch's, and the best parameters get that epoch as ``n_epochs``.
    heartbeat : int, default 60
        Seconds between a worker's signs of life in a database storage.
    worker : int, default 0
        This process's index among the workers (it offsets the sampler's seed).
    extra_cutoffs : sequence of int
        Cut-offs recorded in every trial besides 1, 5, 10, 20 and the metric's.
    warmup : int or None
        Epochs every trial runs before 'median' or 'hyperband' may stop it; None: a third of the
        trials' ``n_epochs`` (`default_warmup`). Not used with an Optuna pruner object.
    allow_pickle : bool, default False
        Read ``.pkl``/``.pickle`` paths (a pickle runs code when read).
    mode : str, default 'standard'
        How ties with the target's score count in the trials' evaluation (`evaluation.evaluate`).

    The events are read with the column names of `fixed` (session_key, item_key, time_key,
    user_key). A study in `storage` is continued only for the same metric, space, fixed
    parameters and data (by content): other data needs another `study_name`.
    """
    import optuna

    defaults = gru4rec.GRU4Rec().get_params()
    kind, n = parse_metric(metric)
    cutoffs = tuple(sorted(set(CUTOFFS) | {n} | set(extra_cutoffs)))
    if not (isinstance(n_trials, int) and n_trials >= 1):
        raise ValueError(f"n_trials must be an int >= 1, got {n_trials!r}")
    if mode not in evaluation.MODES:
        raise ValueError(f"mode={mode!r} is invalid: expected one of {evaluation.MODES}")
    fixed = dict(fixed or {})
    keys = {key: fixed.get(key, defaults[key]) for key in ("session_key", "item_key", "time_key", "user_key")}
    train, valid = (sessiondata.load_events(data, **keys, allow_pickle=allow_pickle) for data in (train, valid))
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial instead
    if warmup is None:
        warmup = default_warmup(space, fixed, defaults)
    if not (isinstance(warmup, int) and not isinstance(warmup, bool) and warmup >= 0):
        raise ValueError(f"warmup must be an int >= 0 (epochs), got {warmup!r}")
    if pruner in ("median", "hyperband"):
        logger.info("%s pruner: no trial is stopped before the end of epoch %d", pruner, warmup + 1)
    pruner = make_pruner(pruner, warmup)
    study = open_study(open_storage(storage, heartbeat), study_name,
                       settings_record(metric, space, fixed, {"train": train, "valid": valid}, mode), seed, pruner,
                       worker)
    study.set_user_attr("n_trials", n_trials)
    study.set_user_attr("patience", patience)
    per_epoch = not isinstance(pruner, optuna.pruners.NopPruner)
    objective = _Objective(train, valid, space, fixed, defaults, metric, cutoffs, n_trials, eval_batch, per_epoch,
                           patience, mode)
    run_trials(study, objective, n_trials, timeout, _reporter(metric, n_trials, objective.searched(), callback))
    return study


def _reporter(metric, n_trials, searched, callback):
    """The line per trial: 'trial i/N: parameters: value (best so far)'."""
    def report(study, trial):
        if trial.user_attrs.get("surplus"):
            logger.debug("trial %d not run: the study has its %d trials", trial.number, n_trials)
            return
        counted = [t.number for t in counted_trials(study.get_trials(deepcopy=False))]
        position = counted.index(trial.number) + 1 if trial.number in counted else "?"
        params = trial.user_attrs.get("params", {})
        shown = ", ".join(f"{k}={params[k]}" for k in searched if k in params)
        seconds = trial.duration.total_seconds() if trial.duration else float("nan")
        done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        best = max(done, key=lambda t: t.value) if done else None
        best_text = f"best {best.value:.4f} in trial {best.number}" if best else "no trial finished yet"
        if trial.state.name == "COMPLETE":
            logger.info("trial %s/%d (#%d): %s: %s %.4f (%s), %.1f s", position, n_trials, trial.number, shown,
                        metric, trial.value, best_text, seconds)
        elif trial.state.name == "PRUNED":
            logger.info("trial %s/%d (#%d): %s: pruned after epoch %s at %s %.4f (%s), %.1f s", position, n_trials,
                        trial.number, shown, trial.user_attrs.get("epochs", "?"), metric, trial.value, best_text,
                        seconds)
        else:
            logger.warning("trial %s/%d (#%d): %s: %s %s (%s)", position, n_trials, trial.number, shown,
                           trial.state.name, trial.user_attrs.get("error", ""), best_text)
        if callback is not None:
            callback(study, trial)
    return report


def best_params(study):
    """Typed parameters of the best trial, ordered as the trial had them (tuples for layers).

    A trial stopped early (patience) gets its best epoch as ``n_epochs``.
    """
    defaults = gru4rec.GRU4Rec().get_params()
    best = study.best_trial
    params = {k: tuple(v) if isinstance(defaults.get(k), tuple) else v for k, v in best.user_attrs["params"].items()}
    if best.user_attrs.get("best_epoch") is not None and study.user_attrs.get("patience"):
        params["n_epochs"] = best.user_attrs["best_epoch"]
    return params


def summary(study, metric, space, fixed, args_line):
    """The JSON payload: settings, best trial, all counted trials."""
    trials = study.get_trials(deepcopy=False)
    counted = counted_trials(trials)
    done = [t for t in counted if t.state.name == "COMPLETE"]  # a pruned trial has its last epoch's value
    best = study.best_trial if done else None
    return {"command": args_line, "metric": metric, "direction": "maximize",
            "study": study.study_name, "n_trials": study.user_attrs.get("n_trials"),
            "space": {name: {k: v for k, v in d._asdict().items() if k not in ("name",)} for name, d in space.items()},
            "fixed": {k: _plain(v) for k, v in fixed.items()},
            "best_trial": best.number if best else None, "best_value": best.value if best else None,
            "best_params": {k: _plain(v) for k, v in best_params(study).items()} if best else None,
            "states": {state: sum(t.state.name == state for t in counted) for state in
                       ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")},
            "not_counted": [t.number for t in trials if t not in counted],
            "trials": [trial_record(t) for t in counted]}


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
    parser.add_argument("-fm", "--final_measure", dest="final_measure", type=int, nargs="+", default=[20],
                        metavar="N", help="at the end, print the best trial's Recall@N and MRR@N at these cut-offs "
                                          "(default 20, as the authors' paropt.py)")
    parser.add_argument("-n", "-nt", "--n-trials", "--ntrials", dest="n_trials", type=int, default=50,
                        help="number of trials (default 50, as the authors' paropt.py)")
    for flags, key in ((("-sk", "--session-key", "--session_key"), "session_key"),
                       (("-ik", "--item-key", "--item_key"), "item_key"),
                       (("-tk", "--time-key", "--time_key"), "time_key")):
        parser.add_argument(*flags, dest=key, metavar="NAME", help=f"{key} column of both files (a fixed parameter)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="read .pkl/.pickle data files (a pickle runs code when read: only files you trust)")
    parser.add_argument("-e", "--eval-type", "--eval_type", dest="eval_type", choices=evaluation.MODES,
                        default="standard", help="how ties with the target's score count (default: standard)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the TPE sampler")
    parser.add_argument("--timeout", type=float, default=None, help="start no trial after this many seconds")
    parser.add_argument("--eval-batch", type=int, default=512, help="parallel sessions in evaluation")
    parser.add_argument("-o", "--output", metavar="PATH", default="paropt_best.txt",
                        help="best parameters as a parameter file (default paropt_best.txt)")
    parser.add_argument("--json", metavar="PATH", default="paropt_trials.json",
                        help="all trials as JSON, rewritten after each trial (default paropt_trials.json)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default="INFO")
    parser.add_argument("--storage", metavar="URL",
                        help="where the study lives: sqlite:///PATH.db, postgresql://user:password@host/db, or "
                             "journal:PATH (a file); run the same command again to continue the study, or on "
                             "more machines to share it (default: sqlite beside -o, e.g. paropt_best.db)")
    parser.add_argument("--study-name", default="gru4rec", metavar="NAME",
                        help="name of the study in the storage (default gru4rec)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="processes running trials of the study on this machine (default 1)")
    parser.add_argument("--pruner", choices=PRUNERS, default="median",
                        help="stop poor trials early on the per-epoch validation metric (default median)")
    parser.add_argument("--warmup", type=int, metavar="N",
                        help="epochs every trial runs before the pruner may stop it (default: a third of "
                             "n_epochs; early epochs rank configurations poorly)")
    parser.add_argument("--patience", type=int, metavar="N",
                        help="early stopping in each trial: stop after N epochs without improvement; the "
                             "best parameters get the best epoch as n_epochs")
    parser.add_argument("--heartbeat", type=int, default=60, metavar="S",
                        help="seconds between a worker's signs of life in a database storage; a trial "
                             "silent for 2S is run again (default 60)")
    parser.add_argument("--plots", metavar="DIR",
                        help="write optimization_history.png and param_importances.png into DIR "
                             "(needs matplotlib: pip install 'gru4rec[plot]')")
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)  # set for spawned workers
    return parser


def _write_atomic(path, text):
    modelfile.atomic_write(path, lambda f: f.write(text.encode("utf-8")), "the results")


def metric_from_args(args):
    """--metric, or the reference's -pm/-m pair; ValueError if both spellings are given."""
    if args.metric is not None:
        if args.primary_metric is not None or args.measure is not None:
            raise ValueError("give either --metric or -pm/-m, not both")
        return args.metric
    return f"{args.primary_metric or 'recall'}@{20 if args.measure is None else args.measure}"


def final_lines(study, cutoffs):
    """The best trial's 'Recall@N: x MRR@N: y' lines (as the reference's final evaluation prints)."""
    attrs = study.best_trial.user_attrs
    value = lambda kind, n: attrs[kind].get(n, attrs[kind].get(str(n)))  # a database storage keeps JSON keys
    missing = [n for n in cutoffs if value("recall", n) is None]
    if missing:  # a continued study whose trials ran before -fm asked for these
        recorded = sorted(int(n) for n in attrs["recall"])
        raise ValueError(f"-fm {' '.join(map(str, missing))}: the best trial recorded only the cut-offs {recorded}")
    return [f"Recall@{n}: {value('recall', n):.6f} MRR@{n}: {value('mrr', n):.6f}" for n in cutoffs]


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
    for flag, value in (("-n", args.n_trials), ("--workers", args.workers), ("--patience", args.patience),
                        ("--heartbeat", args.heartbeat), ("--eval-batch", args.eval_batch)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")
    if args.warmup is not None and args.warmup < 0:
        parser.error(f"--warmup must be an integer >= 0 (epochs), got {args.warmup}")
    if args.plots is not None:
        try:
            plots.require_matplotlib()
        except ImportError as err:
            parser.error(f"--plots: {err}")
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
        fixed.update({key: getattr(args, key) for key in ("session_key", "item_key", "time_key")
                      if getattr(args, key) is not None})
    except ValueError as err:
        parser.error(str(err))
    argv = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["gru4rec-tune", *argv])
    storage = args.storage or f"sqlite:///{Path(args.output).resolve().with_suffix('.db')}"
    worker = args.worker_index
    if worker:
        _tag_log_lines(f"[worker {worker}]")

    def save_json(study, trial):
        _write_atomic(args.json, json.dumps(summary(study, args.metric, space, fixed, command), indent=1) + "\n")

    if worker:
        _exit_with_parent()
    children = [] if worker else start_workers(argv, args.workers - 1)
    try:
        with _terminating(children):
            study = tune(args.train, args.valid, space, fixed, args.metric, args.n_trials, args.seed, args.timeout,
                         args.eval_batch, callback=None if worker else save_json, storage=storage,
                         study_name=args.study_name, pruner=args.pruner, patience=args.patience, warmup=args.warmup,
                         heartbeat=args.heartbeat, worker=worker, extra_cutoffs=args.final_measure,
                         allow_pickle=args.allow_pickle, mode=args.eval_type)
            failed = [i for i, child in enumerate(children, 1) if child.wait() != 0]
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        parser.exit(1, f"gru4rec-tune: error: {err}\n")
    if worker:
        return 0
    if failed:
        logger.warning("workers %s exited with an error (their lines above); the study goes on in the storage",
                       failed)
    return write_outputs(parser, args, study, space, fixed, command, save_json)


def write_outputs(parser, args, study, space, fixed, command, save_json):
    """The JSON of all trials, the best parameter file and the plots; exit 1 if no trial finished."""
    save_json(study, None)
    counted = counted_trials(study.get_trials(deepcopy=False))
    if not any(t.state.name == "COMPLETE" for t in counted):
        parser.exit(1, f"gru4rec-tune: error: no trial finished (see {args.json})\n")
    best = study.best_trial
    comment = (f"best of {len(counted)} trials by gru4rec-tune: {args.metric} {best.value:.6f} on {args.valid} "
               f"(trial {best.number} of study {study.study_name!r})\n{command}")
    _write_atomic(args.output, paramtext.format_param_file(best_params(study), comment=comment))
    if args.plots is not None:
        for path in plots.tuning_plots(study, args.plots, metric=args.metric):
            logger.info("wrote %s", path)
    try:
        lines = final_lines(study, args.final_measure)
    except ValueError as err:
        parser.exit(1, f"gru4rec-tune: error: {err} (the best parameters are written to {args.output})\n")
    for line in lines:
        print(line)
    logger.info("best %s %.4f (trial %d of %d); parameters written to %s, trials to %s", args.metric, best.value,
                best.number, len(counted), args.output, args.json)
    return 0


def start_workers(argv, count):
    """Start `count` more processes running the same command on the same study (worker 1, 2, ...)."""
    if count < 1:
        return []
    here = str(Path(gru4rec.__file__).resolve().parent)  # gru4rec and gru4rec_lib live here
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    logger.info("starting %d more worker process%s", count, "es" if count > 1 else "")
    code = "import sys; from gru4rec_lib import tune; sys.exit(tune.main(sys.argv[1:]))"
    return [subprocess.Popen([sys.executable, "-c", code, *argv, "--worker-index", str(i)], env=env)
            for i in range(1, count + 1)]


@contextlib.contextmanager
def _terminating(children):
    """Stop the worker processes if this one ends early: an error, Ctrl-C, or a SIGTERM (a plain
    `kill` of the command: the workers get it too, then this process ends as SIGTERM would end
    it, without unwinding, which can hang inside a running XLA call). Their running trials are
    re-run by the next call (database storages) with the same parameters."""
    previous = signal.getsignal(signal.SIGTERM)

    def stop(signum, frame):
        for child in children:
            if child.poll() is None:
                child.terminate()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    if children:
        signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        if children:
            signal.signal(signal.SIGTERM, previous)
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


def _exit_with_parent(interval=1.0):
    """In a worker process: end when the process that started it is gone (killed with SIGKILL,
    which it cannot pass on), instead of running trials nobody waits for."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        logger.warning("the gru4rec-tune process that started this worker is gone: stopping")
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _tag_log_lines(tag):
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {tag} %(name)s: %(message)s"))


if __name__ == "__main__":
    sys.exit(main())
