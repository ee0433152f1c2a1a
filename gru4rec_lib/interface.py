"""The model interface that evaluation (and any other caller) uses: GRU4Rec and every baseline.

In the spirit of implicit's ``RecommenderBase``, a session model is something that can be fitted,
that holds B parallel session *slots*, and that scores the next item of every slot:

``fit(data)``
    Learn from events (a DataFrame or a file); returns the model.
``item_ids_``, ``n_items_``
    After fit: the item id of each item index (the columns of score matrices) and their number.
``session_key``, ``item_key``, ``time_key``, ``user_key``, ``reset_between_sessions``
    The event columns the model reads; ``user_key`` None means session data (the baselines).
``reset_state(slots=None)``
    Start the given slots (all when None) afresh.
``score_step(reset, input_idx, active)``
    Feed every slot one item (by index) and return host scores (B, n_items_) of its next item.
``score_steps(chunk, reduction, candidates=None, keep_values=False, start=None)``
    K steps of B slots at once, each step's scores reduced to one value per slot (the target's
    rank, say) and the chunk to a few totals (metric sums). The default runs ``score_step`` on
    the host; GRU4Rec runs the K steps and the reduction as one compiled call on its device and
    hands back only the totals (the values on request).

The reduction is any hashable object with an int ``n_draws``, and methods that work on numpy
(``xp=numpy``) and on PyTensor variables (``xp=pytensor.tensor``) alike:

``draws(chunk)``
    ``n_draws`` host arrays (K, B) of per-step inputs (random numbers, say), fed with the chunk.
``step(scores, target_scores, target_in_scores, xp, *draws)``
    One step: scores (B, C) of the scored items (all items, or the candidates), each slot's
    target score (B,), whether the target's own column is among the C (B,), and this step's
    rows (B,) of the draws. Returns (B,).
``total(values, active, xp)``
    The chunk: values (K, B) (zero where inactive) and the active mask (K, B). Returns a list
    of scalars.
"""
import abc

import numpy as np

from .sessiondata import NotFittedError

__all__ = ["SessionModel"]


class SessionModel(abc.ABC):
    """Base class of every model: fit, reset slots, score the next item, item ids (see the module)."""

    user_key = None  # session data; GRU4Rec overrides both in its constructor
    reset_between_sessions = False

    @abc.abstractmethod
    def fit(self, data):
        """Learn from events (DataFrame or path); return self."""

    @abc.abstractmethod
    def reset_state(self, slots=None):
        """Start the given slots (an int array; all when None) afresh, as if they were new sessions."""

    @abc.abstractmethod
    def score_step(self, reset, input_idx, active):
        """Feed one item per slot; return float32 scores (B, n_items_) of each slot's next item.

        Parameters
        ----------
        reset : array-like of bool, shape (B,)
            The slot starts a new session before taking its input.
        input_idx : array-like of int, shape (B,)
            Item index (position in ``item_ids_``) fed to each slot.
        active : array-like of bool, shape (B,)
            Inactive slots keep their state and score 0.
        """

    def check_fitted(self):
        """Raise NotFittedError if the model has not been fitted (or loaded)."""
        if not hasattr(self, "item_ids_"):
            raise NotFittedError(f"this {type(self).__name__} instance is not fitted yet: call fit first")

    def _check_step(self, reset, input_idx, active):
        """Validate the arguments of ``score_step`` and return them as numpy arrays."""
        self.check_fitted()
        reset, active = _flags(reset, "reset"), _flags(active, "active")
        input_idx = np.asarray(input_idx)
        if reset.ndim != 1 or len(reset) == 0 or input_idx.shape != reset.shape \
                or active.shape != reset.shape:
            raise ValueError("reset, input_idx and active must be 1-d arrays of one length B >= 1, "
                             f"got shapes {reset.shape}, {input_idx.shape}, {active.shape}")
        if not np.issubdtype(input_idx.dtype, np.integer):
            raise TypeError(f"input_idx must hold integer item indices, got {input_idx.dtype}")
        bad = np.flatnonzero(active & ((input_idx < 0) | (input_idx >= self.n_items_)))
        if len(bad):
            raise ValueError(f"input_idx out of range [0, {self.n_items_}) in slots "
                             f"{bad[:5].tolist()} (values {input_idx[bad[:5]].tolist()}); "
                             "drop items unknown to the model")
        return reset, input_idx.astype(np.int64), active

    def score_steps(self, chunk, reduction, candidates=None, keep_values=False, start=None):
        """Feed K steps of B slots (a ``sessiondata.Chunk``); reduce each step's scores, then the chunk.

        Parameters
        ----------
        chunk : sessiondata.Chunk
            Arrays (K, B): inputs, targets, reset, active.
        reduction : object
            ``step`` and ``total`` as described in the module docstring.
        candidates : int array or None
            Score only these item indices (sorted, distinct); None: all items.
        keep_values : bool, default False
            Also return the per-step values (K, B).
        start : object or None
            Start states of continued user sequences (GRU4Rec with ``user_key`` only).

        Returns
        -------
        (totals, values): totals an array (n,), values (K, B) or None. GRU4Rec returns device
        arrays: ``numpy.asarray`` reads them (a synchronisation).
        """
        self.check_fitted()
        if start is not None:
            raise ValueError(f"{type(self).__name__} has no hidden state to continue: "
                             "histories need a GRU4Rec model fitted with user_key")
        values, draws = np.zeros(chunk.active.shape), reduction.draws(chunk)
        for k in np.flatnonzero(chunk.active.any(axis=1)):  # all-inactive steps pad the last chunk
            scores = np.asarray(self.score_step(chunk.reset[k], chunk.inputs[k], chunk.active[k]))
            target = scores[np.arange(len(scores)), chunk.targets[k]]
            in_scores = np.ones(len(scores))
            if candidates is not None:
                in_scores = np.isin(chunk.targets[k], candidates).astype(float)
                scores = scores[:, candidates]
            step = reduction.step(scores, target, in_scores, np, *[d[k] for d in draws])
            values[k] = np.where(chunk.active[k], step, 0)
        totals = np.array(reduction.total(values, chunk.active, np), dtype=float)
        return totals, (values if keep_values else None)


def _flags(values, name):
    """`values` as a bool array: bools, or the ints 0 and 1 (a string such as 'False' is refused, not true)."""
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        if not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans (or 0 and 1), got {np.unique(array)[:5].tolist()}")
    elif array.dtype.kind != "b":
        raise TypeError(f"{name} must hold booleans, got dtype {array.dtype} ({array.ravel()[:3].tolist()})")
    return array.astype(bool)
