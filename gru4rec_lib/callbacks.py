"""Per-epoch callbacks for `GRU4Rec.fit`: validation, learning curves and early stopping.

`GRU4Rec.fit(data, callbacks=[...])` calls each callback after every epoch as
``callback(model, stats)``; ``stats`` is a copy of the epoch's entry of ``model.epoch_stats_``
(``epoch`` counted from 1, ``loss``, ``seconds``, ``batches_per_s``, ``events_per_s``). A callback
that returns True stops training after that epoch (the other callbacks still see the epoch); an
exception raised by a callback ends `fit` and reaches the caller (the tuner stops pruned trials
this way). The model can be evaluated inside a callback: it holds the weights after the epoch.

Examples
--------
>>> import gru4rec
>>> from gru4rec_lib import synthetic
>>> train, valid = synthetic.split_by_time(synthetic.generate_sessions(n_sessions=300, n_items=30, seed=0))
>>> check = Validation(valid, metric="recall@20", patience=2)
>>> model = gru4rec.GRU4Rec(layers=(16,), n_epochs=3, n_sample=8, show_progress=False)
>>> model = model.fit(train, callbacks=[check])
>>> [entry["epoch"] for entry in check.history]
[1, 2, 3]
"""
import logging
import math
import re

import evaluation
from . import sessiondata

logger = logging.getLogger(__name__)
DEFAULT_CUTOFFS = (1, 5, 10, 20)


def parse_metric(text):
    """'recall@20' / 'MRR@5' -> ('recall', 20) / ('mrr', 5); ValueError otherwise."""
    match = re.fullmatch(r"\s*(recall|mrr)\s*@\s*(\d+)\s*", str(text), flags=re.IGNORECASE)
    if not match or int(match.group(2)) < 1:
        raise ValueError(f"metric {text!r} is invalid: expected recall@N or mrr@N with N >= 1, e.g. mrr@20")
    return match.group(1).lower(), int(match.group(2))


class Validation:
    """Evaluate Recall@N and MRR@N on validation data after every epoch; optionally stop early.

    Parameters
    ----------
    valid : DataFrame or path
        Validation events (never the test set). A file is read once, at the first epoch, with the
        model's column names. The caller's frame is not modified.
    cutoffs : sequence of int or None
        Cut-offs N to measure; None: 1, 5, 10, 20 and the metric's N.
    metric : str, default 'recall@20'
        'recall@N' or 'mrr@N': the number that early stopping (and the tuner) watches; higher is better.
    patience : int or None
        Stop training when the metric has not improved for this many epochs in a row; None: never stop.
        The model keeps the weights of its last epoch; refit with ``n_epochs=best_epoch`` for the best one.
    min_delta : float, default 0
        An epoch improves only if its metric exceeds the best so far by more than this.
    mode : str, default 'standard'
        Tie handling of `evaluation.evaluate`.
    batch_size : int, default 512
        Parallel sessions during evaluation.
    history : DataFrame or path or None
        For a GRU4Rec model fitted with ``user_key``: the events each validation user's sequence
        continues from (normally the training data), as ``evaluation.evaluate(..., history=...)``;
        None: every validation user starts from the zero state.

    Attributes
    ----------
    history : list of dict
        One entry per epoch: ``epoch``, ``loss``, ``seconds`` (training), ``recall`` and ``mrr``
        ({N: value}), ``value`` (the watched metric) and ``eval_seconds``.
    best_epoch, best_value : int, float or None
        The epoch with the highest metric so far (the first one on ties) and that metric.
    stopped_epoch : int or None
        The epoch after which this callback stopped training, None if it did not.
    """

    def __init__(self, valid, cutoffs=None, metric="recall@20", patience=None, min_delta=0.0, mode="standard",
                 batch_size=512, history=None):
        self.kind, self.n = parse_metric(metric)
        self.metric = f"{self.kind}@{self.n}"
        self.cutoffs = _cutoffs(cutoffs, self.n)
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
            raise ValueError(f"patience must be None or an int >= 1, got {patience!r}")
        if not (isinstance(min_delta, (int, float)) and math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        if mode not in evaluation.MODES:
            raise ValueError(f"mode {mode!r} is not one of {evaluation.MODES}")
        self.valid, self.patience, self.min_delta = valid, patience, float(min_delta)
        self.mode, self.batch_size, self.past = mode, batch_size, history
        self._events = self._past = None
        self._reset()

    def _reset(self):
        self.history, self.best_epoch, self.best_value, self.stopped_epoch = [], None, None, None

    def score(self, model):
        """Evaluate `model` on the validation data; the dict of `evaluation.evaluate`."""
        if self._events is None:  # read once, as evaluate reads them (a user model may have no session column)
            user_key = getattr(model, "user_key", None)
            reader = sessiondata.SequenceReader(model.session_key, model.item_key, model.time_key, user_key,
                                                getattr(model, "reset_between_sessions", False))
            self._events, self._past = (None if data is None else data if hasattr(data, "columns") else reader.load(data)
                                        for data in (self.valid, self.past))
        return evaluation.evaluate(model, self._events, cutoffs=self.cutoffs, mode=self.mode,
                                   batch_size=self.batch_size, history=self._past)

    def __call__(self, model, stats):
        """Record the epoch's validation numbers; True when early stopping says stop."""
        if stats["epoch"] == 1:  # a new fit
            self._reset()
        result = self.score(model)
        value = float(result[self.kind][self.n])
        entry = {"epoch": stats["epoch"], "loss": stats["loss"], "seconds": stats["seconds"],
                 "recall": dict(result["recall"]), "mrr": dict(result["mrr"]), "value": value,
                 "eval_seconds": result.get("seconds")}
        self.history.append(entry)
        if self.best_value is None or value > self.best_value + self.min_delta:
            self.best_epoch, self.best_value = entry["epoch"], value
        logger.info("epoch %d: valid %s (best %s %.4f at epoch %d)", entry["epoch"], format_metrics(result),
                    self.metric, self.best_value, self.best_epoch)
        if self.patience is not None and entry["epoch"] - self.best_epoch >= self.patience:
            self.stopped_epoch = entry["epoch"]
            logger.info("early stopping after epoch %d: %s did not improve for %d epochs", entry["epoch"],
                        self.metric, self.patience)
            return True
        return False


def format_metrics(result):
    """'Recall@5: 0.1234 MRR@5: 0.0567 Recall@20: ...' from an evaluation result."""
    return " ".join(f"Recall@{n}: {result['recall'][n]:.4f} MRR@{n}: {result['mrr'][n]:.4f}"
                    for n in sorted(result["recall"]))


def _cutoffs(cutoffs, n):
    if cutoffs is None:
        return tuple(sorted(set(DEFAULT_CUTOFFS) | {n}))
    cutoffs = tuple(cutoffs)
    if not cutoffs or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in cutoffs):
        raise ValueError(f"cutoffs must be positive ints, got {cutoffs!r}")
    if n not in cutoffs:
        raise ValueError(f"the metric's cut-off {n} is not among cutoffs {cutoffs}; add it or leave cutoffs=None")
    return tuple(sorted(set(cutoffs)))
