"""GRU4Rec: session-based recommendation with recurrent neural networks.

A faithful implementation of Hidasi et al., "Session-based Recommendations with Recurrent Neural
Networks" (ICLR 2016) and Hidasi & Karatzoglou, "Recurrent Neural Networks with Top-k Gains for
Session-based Recommendations" (CIKM 2018), written as a PyTensor graph and compiled with JAX.
How each option compares with the authors' code is in docs/conformance.md; comments
``# conformance: NAME`` point to its rows.
"""
import dataclasses
import inspect
import json
import logging
import os
import time
from difflib import get_close_matches

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
from pytensor.gradient import zero_grad

from gru4rec_lib import modelfile, progress, sessiondata
from gru4rec_lib.config import LOSSES, make_config, parse_activation
from gru4rec_lib.interface import SessionModel
from gru4rec_lib.live import LiveSessionsMixin
from gru4rec_lib.sampling import SampleStore
from gru4rec_lib.sequences import SequenceMixin, start_from, start_inputs
from gru4rec_lib.optim import (  # noqa: F401 (OPTIMIZER_DEFAULTS, OPTIMIZER_STATES re-exported)
    MATRIX_UPDATE_RATIO,
    OPTIMIZER_DEFAULTS,
    OPTIMIZER_STATES,
    MatrixGrads,
    Optimizer,
    RowGrads,
    absorbs_non_finite,
    all_finite,
    apply_gradients,
    f32,
    is_zero,
    use_matrix_update,
)
from gru4rec_lib.backend import (
    FLOATX,
    compile_fn,
    device_put,
    float32_graph,
    resolve_device,
    schedule_inputs,
    set_on_device,
    shared_on_device,
)

__version__ = "0.1.0"
FORMAT_VERSION = modelfile.FORMAT_VERSION
logger = logging.getLogger(__name__)


ACCUMULATORS = ("acc", "acc_delta", "v", "count")  # optimiser states that are sums of squares or counts
NotFittedError = sessiondata.NotFittedError  # raised when a model is used before `fit` (or `load`)


def _check_callbacks(callbacks):
    """fit's callbacks as a list; TypeError naming the bad one."""
    if callbacks is None:
        return []
    if callable(callbacks) or not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks must be a list of callables, got {callbacks!r}; wrap one in a list: [callback]")
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(f"callbacks: {callback!r} is not callable; each is called as callback(model, stats)")
    return list(callbacks)


class ModelFitError(RuntimeError):
    """Raised when training diverges (a non-finite loss)."""


# ---------------------------------------------------------------- activations and losses
def activation(name):
    """The elementwise activation function of a `hidden_act` / `final_act` name.

    Parameters
    ----------
    name : str
        ``'linear'``, ``'relu'``, ``'tanh'``, ``'leaky-A'`` (x if x >= 0 else A x), ``'elu-A'``
        (x if x >= 0 else A (e^x - 1)) or ``'selu-A-B'`` (A times ``elu-B``), with finite numbers A, B.
        The softmax final activations are not elementwise and are not accepted here.

    Returns
    -------
    callable
        f(x) on a PyTensor variable, returning a variable of the same shape.

    Raises
    ------
    ValueError
        For an unknown name or constants that are missing, extra or not finite numbers.

    Examples
    --------
    >>> import pytensor.tensor as pt
    >>> x = pt.dvector("x")
    >>> activation("leaky-0.1")(x).eval({x: [-2.0, 3.0]})
    array([-0.2,  3. ])
    """
    base, consts = parse_activation(name)
    if base == "linear":
        return lambda x: x
    if base == "relu":
        return lambda x: pt.maximum(x, 0)
    if base == "tanh":
        return pt.tanh
    if base == "leaky":
        return lambda x: pt.switch(x >= 0, x, consts[0] * x)
    if base == "elu":  # x if x >= 0 else a * (e^x - 1); expm1 of min(x, 0) keeps the unused branch finite
        return lambda x: pt.switch(x >= 0, x, consts[0] * pt.expm1(pt.minimum(x, 0)))
    return lambda x: consts[0] * pt.switch(x >= 0, x, consts[1] * pt.expm1(pt.minimum(x, 0)))


def _row_max(scores, mask):
    """Each row's largest valid score (B, 1), the shift that keeps exp finite. Softmax and
    log-sum-exp do not depend on it, so no gradient flows through it (the exact gradient of the
    shift is zero; leaving it out saves a pass over the scores)."""
    return zero_grad(pt.max(pt.switch(mask, scores, -np.inf), axis=1, keepdims=True))


def _masked_softmax(scores, weight):
    """Row softmax over the columns of positive `weight`, each column counted `weight` times: the
    probability of one occurrence of a column (masked columns get exactly 0)."""
    mask = weight > 0
    shifted = scores - _row_max(scores, mask)
    e = pt.switch(mask, pt.exp(pt.minimum(shifted, 0)), 0)
    return e / pt.sum(e * weight, axis=1, keepdims=True)


def _weighted_sum(values, weight):
    """sum_j w_j values_j over the columns of positive weight (a masked column's value is not read)."""
    return pt.sum(pt.switch(weight > 0, values * weight, 0), axis=1)


def _smoothed(nll_pos, nll_all, weight, smoothing):
    """(1 - e*n/(n-1)) * nll_ii + e/(n-1) * sum_j nll_ij with n valid columns (# conformance: smoothing)."""
    if is_zero(smoothing):
        return nll_pos
    n = pt.sum(weight, axis=1)
    return (1 - smoothing * n / (n - 1)) * nll_pos + smoothing / (n - 1) * _weighted_sum(nll_all, weight)


def cross_entropy(scores, pos, weight, smoothing=0.0):
    """-log(p_ii + 1e-24), p = softmax of the row over its valid columns (final_act softmax)."""
    probs = _masked_softmax(scores, weight)
    nll_pos = -pt.log(pt.sum(pt.switch(pos, probs, 0), axis=1) + 1e-24)  # a log per row, not per column
    if is_zero(smoothing):
        return nll_pos
    return _smoothed(nll_pos, -pt.log(probs + 1e-24), weight, smoothing)


def xe_logit(scores, pos, weight, smoothing=0.0):
    """Cross-entropy from logits: -(r_ii - logsumexp_j r_ij), computed stably (final_act softmax_logit)."""
    mask = weight > 0
    shifted = scores - _row_max(scores, mask)
    log_norm = pt.log(_weighted_sum(pt.exp(pt.minimum(shifted, 0)), weight))[:, None]
    nll_all = log_norm - shifted
    return _smoothed(pt.sum(pt.switch(pos, nll_all, 0), axis=1), nll_all, weight, smoothing)


def _positive(scores, pos):
    return pt.sum(pt.switch(pos, scores, 0), axis=1, keepdims=True)  # (B, 1): r_ii


def _masked_mean(values, weight):
    # a row with no negatives (n_sample=0, one active slot) has loss 0, not 0/0
    return _weighted_sum(values, weight) / pt.maximum(pt.sum(weight, axis=1), 1)


def bpr(scores, pos, weight):
    """mean_j -log sigmoid(r_ii - r_ij) (softplus form: same value, stable).

    The mean runs over every valid column of the row, the positive's own included (a constant
    log(2)/n); the *-max losses exclude it. # conformance: bpr
    """
    return _masked_mean(pt.softplus(scores - _positive(scores, pos)), weight)


def top1(scores, pos, weight):
    """mean_j [sigmoid(r_ij - r_ii) + sigmoid(r_ij^2)] - sigmoid(r_ii^2) / n over the n valid columns.

    The mean includes the positive's own column (a constant 0.5/n); its score regulariser
    sigmoid(r_ii^2)/n is taken back out. # conformance: top1
    """
    n = pt.maximum(pt.sum(weight, axis=1), 1)
    own = pt.sigmoid(pt.sum(pt.switch(pos, scores, 0), axis=1) ** 2) / n
    return _masked_mean(pt.sigmoid(scores - _positive(scores, pos)) + pt.sigmoid(scores ** 2), weight) - own


def top1_max(scores, pos, neg_weight):
    """sum_j s_ij [sigmoid(r_ij - r_ii) + sigmoid(r_ij^2)], s = softmax over the negatives."""
    probs = _masked_softmax(scores, neg_weight)
    terms = pt.sigmoid(scores - _positive(scores, pos)) + pt.sigmoid(scores ** 2)
    return _weighted_sum(probs * terms, neg_weight)


def bpr_max(scores, pos, neg_weight, bpreg=1.0):
    """-log(sum_j s_ij sigmoid(r_ii - r_ij) + 1e-24) + bpreg * sum_j s_ij r_ij^2."""
    probs = _masked_softmax(scores, neg_weight)
    hit = _weighted_sum(probs * pt.sigmoid(_positive(scores, pos) - scores), neg_weight)
    loss = -pt.log(hit + 1e-24) + bpreg * _weighted_sum(probs * scores ** 2, neg_weight)
    return pt.switch(pt.any(neg_weight > 0, axis=1), loss, 0)  # no negatives: loss 0, not -log(1e-24)


def loss_rows(loss, scores, pos, col_mask, smoothing=0.0, bpreg=1.0):
    """Per-row loss (B,) of a score matrix with the positives at `pos` (# conformance: losses).

    `col_mask` says which columns are valid: a boolean matrix, or a float matrix of column
    weights, a column of weight c counting as c copies of itself (0: not valid). Every loss is
    symmetric in copies of a negative column, so weights score a sample with repeated negatives
    without repeating them.
    """
    weight = col_mask.astype(scores.dtype)
    neg_weight = pt.switch(pos, 0, weight)
    if loss == "cross-entropy":
        return cross_entropy(scores, pos, weight, smoothing)
    if loss == "xe_logit":
        return xe_logit(scores, pos, weight, smoothing)
    if loss == "bpr-max":
        return bpr_max(scores, pos, neg_weight, bpreg)
    if loss == "top1-max":
        return top1_max(scores, pos, neg_weight)
    return {"bpr": bpr, "top1": top1}[loss](scores, pos, weight)


# ---------------------------------------------------------------- GRU step
def _gradient_where(x, keep):
    """`x` itself, through which the gradient passes only where `keep` (broadcast) holds, 0 elsewhere."""
    return pt.switch(keep, x, zero_grad(x))


def gru_step(x_proj, hidden, Wh, hidden_act):
    """One GRU layer step (# conformance: gru), input projection x.Wx + b precomputed as `x_proj` (B, 3h).

    r = sigmoid(x Wr + h Ur + br), z = sigmoid(x Wz + h Uz + bz),
    h~ = hidden_act(x Wh + (r * h) Uh + bh), h' = (1 - z) * h + z * h~.
    The reset gate acts on h before the product with Uh (not after, as in some library cells).
    """
    n_hidden = Wh.type.shape[0]  # static, so that the slices below are static for JAX
    Wh_rz, Wh_h = Wh[:, : 2 * n_hidden], Wh[:, 2 * n_hidden:]
    gates = pt.sigmoid(x_proj[:, : 2 * n_hidden] + hidden @ Wh_rz)
    reset_gate, update_gate = gates[:, :n_hidden], gates[:, n_hidden:]
    candidate = hidden_act(x_proj[:, 2 * n_hidden:] + (reset_gate * hidden) @ Wh_h)
    return (1 - update_gate) * hidden + update_gate * candidate


def dropout(x, p, rng, shape):
    """Inverted dropout with a static `shape` (JAX needs one); returns (next_rng, x_dropped).

    `p` is a number or a symbolic scalar (a graph input)."""
    if is_zero(p):
        return rng, x
    next_rng, uniform = pt.random.uniform(size=shape, rng=rng, return_next_rng=True)
    return next_rng, apply_dropout(x, uniform >= p, p)


def apply_dropout(x, keep, p):
    """x / (1 - p) where the mask `keep` is true, else 0 (x itself when p is 0)."""
    if is_zero(p):
        return x
    return pt.switch(keep, x / f32(1 - p), 0).astype(FLOATX)


@dataclasses.dataclass
class StepRows:
    """The item rows of one training step: `idx`/`touched` per item matrix (its occurrences and
    which count), the input occurrences' `in_touched`, the output columns `out_idx` (targets, then
    negatives) and `col_active`, `n_in` input rows, the BPTT `window` (or None), whether the output
    matrix is scored `whole` and with `counted` negatives, the `gathered` rows of the matrices
    updated by rows, and the input rows `x_rows`."""

    idx: dict
    touched: dict
    in_touched: object
    out_idx: object
    col_active: object
    n_in: int
    window: object
    whole: bool
    counted: bool
    gathered: dict
    x_rows: object


# ---------------------------------------------------------------- the model
class _TrainingCalls:
    """The training program of a fit, called with one schedule chunk (K steps) at a time; each
    call returns the losses of the call before it (the device runs a call while the host builds
    the next one), `finish` those of the last.

    Where it pays (`pays`), the program runs without its per-step finiteness guard, and a check at
    the end of each call (in the same program), read before the next one starts, tells whether
    every loss and gradient norm so far and every parameter and optimiser state is still finite:
    a non-finite value stays non-finite under every later step (`optim.absorbs_non_finite`), so
    the check sees whatever a step made non-finite. When it is not, the values kept at the start of the segment (copies taken
    every SEGMENT calls, and after each refill of the sample store, whose rows the calls read)
    are put back and the segment's calls run again with the guarded program, compiled then, from
    the same values, random state and sample rows: the fit then ends as a guarded one ends, at
    the first step whose loss or update was not finite, and the guarded program runs from there
    on (the two programs may round differently, so that step can lie a few steps from where a
    fit guarded throughout would fail). Elsewhere every call runs the guarded program.
    """

    SEGMENT = 16

    def __init__(self, model, cfg, store, variables, consts):
        self._model, self._cfg, self._variables, self._consts = model, cfg, variables, consts
        self._checked = self.pays(cfg, model.n_items_, store)
        self._program = model._compile_train(cfg, variables, consts, guard=not self._checked)
        self._segment = None  # (the values before its first call, the chunks of its calls)
        self._last = None  # (losses, finite) of the last call, finite not read yet (None: guarded)

    @staticmethod
    def pays(cfg, n_items, store):
        """Whether unguarded calls checked once each are the faster way: on a CPU (where the
        guard's passes over the item matrices and its conditional are about a tenth of a step),
        with an optimiser that keeps non-finite values non-finite, for catalogues small against
        one step's rows (a segment's copy of the item matrices and their state is then cheap),
        and a sample store that holds more than one call's rows (a refill starts a segment)."""
        return (getattr(cfg.device, "platform", "cpu") == "cpu" and absorbs_non_finite(dict(cfg.adapt_consts))
                and n_items <= MATRIX_UPDATE_RATIO * (cfg.batch_size + cfg.n_sample)
                and (not cfg.n_sample or store.n_rows >= 2))

    def __call__(self, *chunk):
        """Run one call on `chunk` (inputs, targets, reset, active, sample rows); returns the
        previous call's losses (None for the first)."""
        previous = self.settle()
        if self._checked:
            if self._segment is None or len(self._segment[1]) >= self.SEGMENT:
                self._segment = (self._program.snapshot(), [])
            self._segment[1].append(chunk)
            self._last = tuple(self._program(*chunk))  # the losses, and the check of the values left
        else:
            self._last = (self._program(*chunk), None)
        return previous

    def settle(self, new_segment=False):
        """The last call's losses (None if none is pending), checked: a call that made a value
        non-finite is run again with the guard (its segment replayed). `new_segment`: the calls
        after this start a segment of their own (the sample store is about to change)."""
        if self._last is None:
            return None
        losses, finite = self._last
        if finite is not None and not bool(np.asarray(finite)):
            losses = self._replay()
        self._last = (losses, None)
        if new_segment:
            self._segment = None
        return losses

    def finish(self):
        """The last call's losses (checked); no call is pending afterwards."""
        losses = self.settle()
        self._last = None
        return losses

    def _replay(self):
        """Put back the values before the segment and run its calls with the guard; from then
        on every call is guarded. Returns the losses of the segment's last call."""
        logger.debug("a training call made a value non-finite: its calls run again with the guard")
        before, chunks = self._segment
        self._program.restore(before)
        self._program = self._model._compile_train(self._cfg, self._variables, self._consts, guard=True)
        self._checked, self._segment = False, None
        for chunk in chunks[:-1]:  # checked finite before: their losses were counted
            self._program(*chunk)
        return self._program(*chunks[-1])


class GRU4Rec(SequenceMixin, LiveSessionsMixin, SessionModel):
    """GRU4Rec session-based recommender (Hidasi et al. 2016; Hidasi & Karatzoglou 2018).

    Parameters
    ----------
    loss : str, default 'bpr-max'
        'cross-entropy' (needs final_act='softmax'), 'xe_logit' (needs final_act='softmax_logit'),
        'bpr-max', 'top1-max', 'bpr', 'top1'. Use cross-entropy or bpr-max (with final_act elu-0.5,
        elu-1 or linear); bpr and top1 suffer from vanishing gradients.
    final_act : str or None, default None
        Activation of the scores: 'linear', 'relu', 'tanh', 'leaky-X', 'elu-X', 'selu-X-Y',
        'softmax' (with cross-entropy), 'softmax_logit' (with xe_logit). None: the loss's own,
        softmax with cross-entropy, softmax_logit with xe_logit, linear with the others (the
        Theano code's default; the PyTorch port's elu_param=0.5 gives elu-0.5 with bpr-max);
        get_params keeps None.
    hidden_act : str, default 'tanh'
        Activation of the GRU candidate state (the gates are always sigmoid).
    layers : tuple of int, default (100,)
        Hidden units of each stacked GRU layer.
    n_epochs : int, default 10
        Passes over the training data.
    batch_size : int, default 32
        Number of session-parallel slots (mini-batch size).
    dropout_p_embed : float, default 0.0
        Dropout on the input vector (separate or shared embedding); ignored with one-hot input,
        as in the authors' code.
    dropout_p_hidden : float, default 0.0
        Dropout on every GRU layer's output; the dropped-out vector is carried as hidden state.
    learning_rate : float, default 0.1
    momentum : float, default 0.0
        Classical momentum on the optimiser's step, L2 term included (0 disables it).
    lmbd : float, default 0.0
        L2 regularisation of every dense parameter and of every
        item row touched in the step, after the optimiser's scaling: p -= lr * (d + lmbd * p), d the
        optimiser's direction (outside grad_cap; see docs/conformance.md, lmbd).
    embedding : int or 'layersize', default 0
        0: no embedding, the first layer's input weights are indexed by item (one-hot input);
        k > 0: a separate item embedding of size k; 'layersize': k = layers[0].
    constrained_embedding : bool, default False
        Shared embedding: the input vector is the item's row of the output matrix Wy
        (``embedding`` is then ignored). Usually the most accurate choice.
    n_sample : int, default 2048
        Extra negative samples per mini-batch, shared by its rows (0: in-batch negatives only).
    sample_alpha : float, default 0.75
        Sampling probability proportional to support ** sample_alpha (1 popularity, 0 uniform).
    smoothing : float, default 0.0
        Label smoothing for cross-entropy / xe_logit.
    bpreg : float, default 1.0
        Score regularisation of bpr-max.
    logq : float, default 0.0
        LogQ correction strength in [0, 1] (training only; meant for cross-entropy).
    sample_store : int, default 10_000_000
        Negative ids drawn in advance (sample_store // n_sample rows); under 2 rows: draw per step.
    init_as_normal : bool, default False
        Draw weights from N(0, s) instead of U[-s, s], s = sqrt(6 / (rows + cols)) per block.
    sigma : float, default 0.0
        If > 0, use it as s for every weight block.
    adapt : {'adagrad', 'rmsprop', 'adadelta', 'adam', None}, default 'adagrad'
        Optimiser; None is plain SGD. adadelta runs at learning rate 1.0 (learning_rate is then
        ignored, with a warning), as in the authors' code. Formulas: gru4rec_lib/optim.py.
    adapt_params : dict or None, default None
        Optimiser constants overriding ``OPTIMIZER_DEFAULTS`` (e.g. {'decay': 0.9, 'epsilon': 1e-6}).
    grad_cap : float, default 0.0
        If > 0, rescale the gradient when its global norm reaches it. The norm runs over the dense
        gradients and the gradient of every occurrence of an item row, before the L2 term.
    train_random_order : bool, default False
        Visit sessions in a fresh random order each epoch (overrides time_sort).
    time_sort : bool, default True
        Visit sessions by the time of their first event (else by session id).
    steps_per_call : int or None, default None
        Mini-batches run per compiled call (K), one step's program looped by XLA; None: 16 on a
        CPU, 64 on a GPU (measured fastest on each: see bench/README.md; before 2026-12-07 the CPU
        default was 1). A speed knob: without dropout the weights equal K=1 (float32 rounding
        aside), except that negatives are redrawn up to K-1 steps early when the sample store
        runs out; with dropout the masks differ (padding steps also draw them), so a seeded fit's
        numbers depend on K: pass steps_per_call=1 to repeat a fit of the old CPU default.
    item_update : {'auto', 'rows', 'matrix'}, default 'auto'
        How a step writes the item matrices (output weights and biases, item embedding) and their
        optimiser state: 'rows' gathers the rows the step touched, updates them and scatters them
        back; 'matrix' sums the touched rows' gradients into a whole-matrix gradient and updates
        every row, keeping the untouched ones as they were; the output matrix is then also scored
        whole (one product with every item; the sampled negatives become per-item counts that
        weight the items' columns), so its gradient is one dense product. The same numbers
        (float32 rounding aside; over a long fit such rounding differences grow as any 1-ulp
        change of a learning rate does); a speed knob.
        'auto': 'matrix' when the catalogue has at most twice as many items as a step touches
        rows (small catalogues with many negatives), else 'rows'.
    seed : int or None, default 42
        Seeds initialisation, session order, negative sampling and dropout. None: fresh entropy.
    device : {None, 'cpu', 'gpu', 'cuda'}, default None
        Compute device; None uses JAX's default (a GPU when JAX sees one).
    show_progress : bool, default True
        Show a progress bar of mini-batches per epoch when stderr is a terminal (elsewhere the
        INFO log line per epoch reports progress).
    session_key, item_key, time_key : str, default 'SessionId', 'ItemId', 'Time'
        Column names of the event data (session_key may be None with user_key).
    bptt : int, default 1
        Truncated backpropagation through time: the loss of each step is backpropagated through
        the last ``bptt`` steps of its slot (stopping at a reset). 1 is the published model. With
        T > 1 every step recomputes its slot's last T GRU steps from the state T-1 steps back,
        with the current weights and the dropout masks those steps had, and the item rows fed in
        those steps get gradients too; one optimiser step per mini-batch as with T = 1
        (Williams & Peng's BPTT(T, 1)). An extension: the authors' code has no BPTT.
    user_key : str or None, default None
        Sequence-aware mode: the column of user ids. Each user's events (all sessions, in time
        order) form one sequence that occupies a slot; every consecutive pair of events is a
        training step, across session boundaries too. ``evaluation.evaluate(..., history=...)``
        then continues each user's test sequence from the state after their history.
    reset_between_sessions : bool, default False
        With user_key: zero the hidden state before the first event of each session of a user
        (the step that predicts that event from the previous session is still trained). Needs
        the session column.
    max_live_sessions : int, default 100_000
        Most sessions `recommend` keeps a hidden state for; beyond it the least recently used
        session is forgotten (it starts again from the zero state if it comes back). Each kept
        session costs about 4 bytes per hidden unit plus its set of seen items.

    Attributes
    ----------
    item_ids_ : ndarray
        Item id of each item index (the columns of score matrices).
    n_items_ : int
    epoch_losses_ : list of float
        Training loss of each epoch of the last `fit`: the mini-batch losses (sum over the active
        rows / batch_size) averaged with their numbers of active rows as weights.
    stopped_epoch_ : int or None
        The epoch after which a `fit` callback stopped training; None if all epochs ran.

    Notes
    -----
    The model interface shared with the baselines (`gru4rec_lib.interface.SessionModel`), which
    evaluation uses: `fit`, `reset_state`, `score_step`, `score_steps` (on the device) and
    ``item_ids_``. The sequence-aware extension (``bptt``, ``user_key``) is in
    `gru4rec_lib.sequences`.

    Examples
    --------
    >>> from gru4rec_lib import synthetic
    >>> train = synthetic.generate_sessions(n_sessions=500, n_items=50, seed=1)
    >>> model = GRU4Rec(layers=(32,), n_epochs=1, n_sample=16, show_progress=False).fit(train)
    >>> model.n_items_
    50
    """

    def __init__(self, loss="bpr-max", final_act=None, hidden_act="tanh", layers=(100,), n_epochs=10,
                 batch_size=32, dropout_p_embed=0.0, dropout_p_hidden=0.0, learning_rate=0.1, momentum=0.0,
                 lmbd=0.0, embedding=0, constrained_embedding=False, n_sample=2048, sample_alpha=0.75,
                 smoothing=0.0, bpreg=1.0, logq=0.0, sample_store=10_000_000, init_as_normal=False, sigma=0.0,
                 adapt="adagrad", adapt_params=None, grad_cap=0.0, train_random_order=False, time_sort=True,
                 steps_per_call=None, item_update="auto", seed=42, device=None, show_progress=True,
                 session_key="SessionId", item_key="ItemId", time_key="Time", bptt=1, user_key=None,
                 reset_between_sessions=False, max_live_sessions=100_000):
        for name, value in locals().items():
            if name != "self":
                setattr(self, name, value)

    # -- parameters -------------------------------------------------------------------------
    def get_params(self, deep=True):
        """Constructor parameters as a dict (scikit-learn convention)."""
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def set_params(self, **params):
        """Set constructor parameters; unknown names raise ValueError. Returns self.

        A fitted model keeps serving, and `save` keeps writing, the parameters it was fitted (or
        loaded) with: new values take effect at the next `fit`."""
        for name, value in params.items():
            if name not in PARAM_NAMES:
                close = get_close_matches(name, PARAM_NAMES, n=3)
                raise ValueError(f"unknown parameter {name!r}" + (f"; did you mean {close}?" if close else ""))
            setattr(self, name, value)
        return self

    def config(self):
        """The validated, frozen `Config` of the current parameters (what `fit` trains with)."""
        return make_config(self.get_params(), Config)

    # -- weights ----------------------------------------------------------------------------
    def _param_shapes(self, cfg, n_items):
        """name -> (shape, number of column blocks); item-indexed (sparse) names in `_sparse_names`."""
        h = cfg.layers
        shapes = {}
        if cfg.mode == "none":
            shapes["Wx_0"] = ((n_items, 3 * h[0]), 3)
        else:
            if cfg.mode == "separate":
                shapes["E"] = ((n_items, cfg.emb_size), 1)
            shapes["Wx_0"] = ((cfg.emb_size, 3 * h[0]), 3)
        for layer in range(1, len(h)):
            shapes[f"Wx_{layer}"] = ((h[layer - 1], 3 * h[layer]), 3)
        for layer in range(len(h)):
            shapes[f"Wh_{layer}"] = ((h[layer], 3 * h[layer]), 3)
            shapes[f"Bh_{layer}"] = ((3 * h[layer],), 0)
        shapes["Wy"] = ((n_items, h[-1]), 1)
        shapes["By"] = ((n_items,), 0)
        return shapes

    @staticmethod
    def _sparse_names(cfg):
        return ["E", "Wy", "By"] if cfg.mode == "separate" else ["Wx_0", "Wy", "By"] if cfg.mode == "none" else ["Wy", "By"]

    @staticmethod
    def _init_weight(cfg, shape, n_blocks, rng, n_rows=None):
        """U[-s, s] (or N(0, s)) per column block, s = sqrt(6 / (rows + cols)) or sigma; zeros for biases.

        `n_rows` draws only that many rows of an item matrix (new items at retrain).
        """
        rows = shape[0] if n_rows is None else n_rows
        if n_blocks == 0:
            return np.zeros((rows,) + shape[1:], dtype=FLOATX)
        block_cols = shape[1] // n_blocks
        scale = cfg.sigma or np.sqrt(6.0 / (shape[0] + block_cols))
        size = (rows, shape[1])
        values = rng.normal(0, scale, size) if cfg.init_as_normal else rng.uniform(-scale, scale, size)
        return values.astype(FLOATX)

    def _new_state(self, cfg, n_items, rng):
        """Fresh weights, zero optimiser state and velocities, and the Adam step counter (numpy)."""
        state = {}
        for name, (shape, n_blocks) in self._param_shapes(cfg, n_items).items():
            state[name] = self._init_weight(cfg, shape, n_blocks, rng)
            state.update({key: np.zeros(Optimizer.state_shape(key, shape), dtype=FLOATX)
                          for key in self._optimizer_keys(cfg, name)})
        state["step"] = np.zeros((), dtype=FLOATX)
        return state

    @classmethod
    def _optimizer_keys(cls, cfg, name):
        """State keys of parameter `name`: optimiser state (Adam: a per-row count on item matrices), velocity."""
        sparse = name in cls._sparse_names(cfg)
        return Optimizer(cfg.adapt, momentum=cfg.momentum).state_keys(name, sparse)

    def _grown_state(self, cfg, n_items, rng):
        """The fitted state with rows for new items appended (# conformance: retrain): weights initialised as new,
        optimiser state and velocity zero. Existing rows and optimiser state are kept (documented in fit)."""
        old = {name: np.asarray(var.get_value(borrow=True)) for name, var in self._state.items()}
        shapes = self._param_shapes(cfg, n_items)
        keys = [key for name in shapes for key in [name] + self._optimizer_keys(cfg, name)] + ["step"]
        missing = set(keys) - set(old)
        if missing:
            raise ValueError(f"cannot retrain: the fitted model has no state {sorted(missing)}; "
                             "fit with retrain=False after changing adapt or momentum")
        for name in self._sparse_names(cfg):
            (shape, n_blocks), n_new = shapes[name], n_items - old[name].shape[0]
            old[name] = np.concatenate([old[name], self._init_weight(cfg, shape, n_blocks, rng, n_rows=n_new)])
            for key in self._optimizer_keys(cfg, name):
                old[key] = np.concatenate([old[key], np.zeros((n_new,) + old[key].shape[1:], dtype=FLOATX)])
        return {key: old[key] for key in keys}

    def _check_retrain(self, cfg):
        self._check_fitted()
        saved = self._graph_params
        now = {k: getattr(cfg, k) for k in saved}
        changed = {k: (saved[k], now[k]) for k in saved if saved[k] != now[k]}
        if changed:
            raise ValueError(f"cannot retrain after changing {changed} (old, new): these change the "
                             "weight shapes; fit with retrain=False")

    # -- graph --------------------------------------------------------------------------------
    @staticmethod
    def _forward(cfg, weights, x_rows, hidden, rng=None, training=False, keeps=None, rates=None):
        """GRU layers from the looked-up input rows; returns (rng, new hidden states per layer).

        With training=True: dropout, and the batch size is cfg.batch_size. `keeps` (BPTT) gives
        the dropout masks instead of drawing them: {"embed": (B, emb) bool, layer: (B, h) bool}.
        `rates` may give the dropout rates as symbolic scalars (`_run_time_values`).
        """
        rates = rates or {}
        hidden_act = activation(cfg.hidden_act)

        def drop(x, p, key, shape, rng):
            if not training:
                return rng, x
            if keeps is None:
                return dropout(x, p, rng, shape)
            return rng, x if is_zero(p) else apply_dropout(x, keeps[key], p)

        x, new_hidden = x_rows, []
        for layer, h in enumerate(hidden):
            if layer == 0 and cfg.mode == "none":
                x_proj = x + weights["Bh_0"]  # the looked-up rows of Wx_0 are x . Wx_0 for a one-hot x
            else:
                if layer == 0:
                    rng, x = drop(x, rates.get("dropout_p_embed", cfg.dropout_p_embed), "embed",
                                  (cfg.batch_size, cfg.emb_size), rng)
                x_proj = x @ weights[f"Wx_{layer}"] + weights[f"Bh_{layer}"]
            x = gru_step(x_proj, h, weights[f"Wh_{layer}"], hidden_act)
            # conformance: dropout; the dropped-out vector is the one carried as the next hidden state
            rng, x = drop(x, rates.get("dropout_p_hidden", cfg.dropout_p_hidden), layer,
                          (cfg.batch_size, cfg.layers[layer]), rng)
            new_hidden.append(x)
        return rng, new_hidden

    @staticmethod
    def _input_name(cfg):
        return {"none": "Wx_0", "separate": "E", "shared": "Wy"}[cfg.mode]

    def _train_step(self, cfg, names, batch_size, x_idx, y_idx, reset, active, sample_row, *args, guard=True):
        """One session-parallel training step (# conformance: schedule): the new value of every
        variable of `names` (given after the step's inputs, then the constants), then the loss.
        Without `guard` the new values are not checked (`optim.apply_gradients`)."""
        n_state = len(names)
        state = dict(zip(names, args[:n_state]))
        store, log_support, log_support_alpha, *inputs = args[n_state:]
        knobs = dict(zip(self._run_time_values(cfg), inputs))  # hyperparameters given at run time
        hidden = [state[f"hidden_{i}"] for i in range(len(cfg.layers))]
        neg = store[sample_row] if cfg.n_sample else None
        rows = self._step_rows(cfg, state, x_idx, y_idx, reset, active, neg, batch_size)
        if rows.window:
            rng, new_hidden, carried = self._bptt_forward(cfg, state, rows.window, rows.x_rows, hidden)
        else:
            hidden = [pt.switch(reset[:, None], 0, h) for h in hidden]
            rng, new_hidden = self._forward(cfg, state, rows.x_rows, hidden, state.get("rng"), training=True,
                                            rates=knobs)
            carried = {f"hidden_{i}": h for i, h in enumerate(new_hidden)}
        scores, weight, out_scores = self._step_scores(cfg, state, rows, new_hidden[-1], y_idx, neg, active,
                                                       batch_size, log_support, log_support_alpha,
                                                       knobs.get("logq", np.float32(cfg.logq)))
        n_cols = batch_size + (state["Wy"].type.shape[0] if rows.counted else cfg.n_sample)
        pos = pt.as_tensor_variable(np.eye(batch_size, n_cols, dtype=bool))
        per_row = loss_rows(cfg.loss, scores, pos, weight, knobs.get("smoothing", cfg.smoothing),
                            knobs.get("bpreg", cfg.bpreg))
        loss = pt.sum(pt.switch(active, per_row, 0)) / np.float32(batch_size)
        dense_grads, row_grads = self._step_grads(cfg, state, rows, loss, out_scores, new_hidden[-1], active, weight)
        # conformance: schedule; without sampled negatives the authors end the epoch when one session is left
        opt = dataclasses.replace(Optimizer.from_config(cfg), inputs={
            k: v for k, v in knobs.items() if k in ("learning_rate", "momentum", "lmbd")})
        new = apply_gradients(opt, knobs.get("grad_cap", cfg.grad_cap), state, dense_grads, row_grads,
                              loss, active, min_active=1 if cfg.n_sample else 2, item_update=cfg.item_update,
                              branch=getattr(cfg.device, "platform", "cpu") == "cpu", guard=guard)
        new.update(carried)
        new["rng"] = rng
        stopped = state["ok"] & ~new["ok"]  # this step's loss or update was not finite: report it as NaN
        return [new[n] for n in names] + [pt.switch(stopped, np.float32(np.nan), loss)]

    def _step_rows(self, cfg, state, x_idx, y_idx, reset, active, neg, batch_size):
        """The item rows one step reads and updates, and how (`StepRows`)."""
        out_idx = pt.concatenate([y_idx, neg]) if cfg.n_sample else y_idx  # (C,) C = B + n_sample
        col_active = pt.concatenate([active, pt.ones((cfg.n_sample,), dtype="bool")]) if cfg.n_sample else active
        window = self._bptt_window(cfg, state, x_idx, reset, active) if cfg.bptt > 1 else None
        in_idx, in_touched = (window["x"].flatten(), window["touched"].flatten()) if window else (x_idx, active)
        n_in = cfg.bptt * batch_size
        idx = {"Wy": out_idx, "By": out_idx, self._input_name(cfg): in_idx}
        touched = {"Wy": col_active, "By": col_active, self._input_name(cfg): in_touched}
        if cfg.mode == "shared":
            idx["Wy"], touched["Wy"] = pt.concatenate([in_idx, out_idx]), pt.concatenate([in_touched, col_active])
        # conformance: item_update; a small output matrix is scored whole, the step's columns taken
        # from the product: its gradient is then one (N, B) x (B, h) product, no row gather or scatter;
        # with sampled negatives their columns are the whole product itself, each item weighted by
        # how often the step drew it (`counted`)
        whole = use_matrix_update(cfg.item_update, state["Wy"].type.shape[0], idx["Wy"].type.shape[0])
        counted = whole and cfg.n_sample > 0
        by_matrix = {"Wy", "By"} if counted else {"Wy"} if whole else set()
        gathered = {name: state[name][idx[name]] for name in idx if name not in by_matrix}
        if whole and cfg.mode == "shared":
            x_rows = _gradient_where(state["Wy"][in_idx], in_touched[:, None])
        else:
            x_rows = gathered["Wy"][:n_in] if cfg.mode == "shared" else gathered[self._input_name(cfg)]
        return StepRows(idx, touched, in_touched, out_idx, col_active, n_in, window, whole, counted, gathered,
                        x_rows)

    def _step_scores(self, cfg, state, rows, hidden, y_idx, neg, active, batch_size, log_support, log_support_alpha,
                     logq):
        """(scores, column weights, the score blocks whose gradients the update needs) of one step."""
        if rows.counted:
            out_scores, weight = self._counted_scores(cfg, state, hidden, y_idx, neg, active, log_support,
                                                      log_support_alpha, logq)
            scores = pt.concatenate(out_scores, axis=1)  # (B, B + N)
        else:
            if rows.whole:
                out_scores = [_gradient_where((hidden @ state["Wy"].T)[:, rows.out_idx], rows.col_active[None, :])]
                scores = out_scores[0] + rows.gathered["By"]  # (B, C)
            else:
                out_scores = []
                Wy_out = rows.gathered["Wy"][rows.n_in:] if cfg.mode == "shared" else rows.gathered["Wy"]
                scores = hidden @ Wy_out.T + rows.gathered["By"]  # (B, C)
            if cfg.logq:  # conformance: logq; q = supp for in-batch targets, supp^alpha for sampled columns
                log_q = (pt.concatenate([log_support[y_idx], log_support_alpha[neg]]) if cfg.n_sample
                         else log_support[y_idx])
                scores = scores - logq * log_q
            weight = rows.col_active[None, :] & pt.ones((batch_size, 1), dtype="bool")
        if LOSSES[cfg.loss] is None:
            scores = activation(cfg.final_act)(scores)
        return scores, weight, out_scores

    def _step_grads(self, cfg, state, rows, loss, out_scores, hidden, active, weight):
        """The loss's gradients: ({dense parameter: gradient}, {item matrix: RowGrads or MatrixGrads})."""
        dense = [n for n in self._param_names if n not in rows.idx]
        by_rows = list(rows.gathered)
        wrt = [state[n] for n in dense] + [rows.gathered[n] for n in by_rows]
        shared_input = [rows.x_rows] if rows.whole and cfg.mode == "shared" else []
        if rows.counted:
            wrt += [state["Wy"], state["By"], *out_scores, *shared_input]
        elif rows.whole:
            wrt += [state["Wy"], *out_scores, *shared_input]
        grads = pt.grad(loss, wrt)
        matrix_grads = grads[len(dense) + len(by_rows):]
        row_grads = {n: RowGrads(rows.idx[n], rows.gathered[n], g, rows.touched[n])
                     for n, g in zip(by_rows, grads[len(dense):len(dense) + len(by_rows)])}
        if rows.counted:
            row_grads.update(self._counted_grads(cfg, rows.idx, rows.touched, hidden, active, rows.in_touched, weight,
                                                 *matrix_grads))
        elif rows.whole:
            row_grads["Wy"] = self._whole_output_grads(cfg, rows.idx["Wy"], rows.touched["Wy"], hidden,
                                                       rows.col_active, rows.in_touched, *matrix_grads)
        return dict(zip(dense, grads)), row_grads

    @staticmethod
    def _counted_scores(cfg, state, hidden, y_idx, neg, active, log_support, log_support_alpha, logq):
        """The score columns of a step with sampled negatives over a small catalogue, scored whole.

        Returns ([targets' columns (B, B), every item's column (B, N)], column weights (1, B + N)):
        the in-batch targets' columns weigh 1 when their slot is active (0 else), and item j's
        column weighs the number of times the step's sample drew j. The losses treat a column of
        weight c as c copies of it, so this is the authors' (B, B + n_sample) score matrix without
        repeating its columns: the same loss and gradient, no gather of sampled columns and no
        scatter of their gradients. `logq`: the correction's strength (float32 or a run-time
        input), used when cfg.logq is not 0. # conformance: item_update
        """
        logits = hidden @ state["Wy"].T + state["By"]  # (B, N)
        targets = _gradient_where(logits[:, y_idx], active[None, :])
        items = logits - logq * log_support_alpha if cfg.logq else logits.copy()
        if cfg.logq:  # conformance: logq; q = supp for in-batch targets, supp^alpha for sampled columns
            targets = targets - logq * log_support[y_idx]
        ones = (neg >= 0).astype(FLOATX)  # not a constant 1: PyTensor's JAX scatter-add rejects a scalar
        counts = pt.inc_subtensor(pt.zeros(state["By"].type.shape, dtype=FLOATX)[neg], ones)
        return [targets, items], pt.concatenate([active.astype(FLOATX), counts])[None, :]

    @staticmethod
    def _counted_grads(cfg, idx, touched, hidden, active, in_touched, weight, grad_Wy, grad_By, grad_targets,
                       grad_items, grad_x=None):
        """`MatrixGrads` of Wy and By after `_counted_scores`. For the gradient cap each occurrence
        counts on its own: the c draws of item j share its column's gradient G_j equally, so they
        add |h^T G_j|^2 / c (and (sum_i G_ij)^2 / c for the bias) to the squared norm."""
        if not cfg.grad_cap:
            zero = np.float32(0)
            return {"Wy": MatrixGrads(idx["Wy"], grad_Wy, touched["Wy"], zero),
                    "By": MatrixGrads(idx["By"], grad_By, touched["By"], zero)}
        counts = weight[0, active.type.shape[0]:]
        share = pt.switch(counts > 0, 1 / pt.maximum(counts, 1), 0)
        gram = hidden @ hidden.T  # a column's gradient for Wy is hidden^T g: squared norm g^T (hidden hidden^T) g
        norm_Wy = (pt.sum(pt.switch(active, pt.sum((gram @ grad_targets) * grad_targets, axis=0), 0))
                   + pt.sum(pt.sum((gram @ grad_items) * grad_items, axis=0) * share))
        norm_By = (pt.sum(pt.switch(active, pt.sum(grad_targets, axis=0) ** 2, 0))
                   + pt.sum(pt.sum(grad_items, axis=0) ** 2 * share))
        if grad_x is not None:  # shared embedding: the input rows' gradients are occurrences too
            norm_Wy = norm_Wy + pt.sum(pt.switch(in_touched[:, None], grad_x, 0) ** 2)
        return {"Wy": MatrixGrads(idx["Wy"], grad_Wy, touched["Wy"], norm_Wy),
                "By": MatrixGrads(idx["By"], grad_By, touched["By"], norm_By)}

    @staticmethod
    def _whole_output_grads(cfg, idx, touched, hidden, col_active, in_touched, grad_Wy, grad_scores, grad_x=None):
        """`MatrixGrads` of the output matrix scored whole: the gradient summed by PyTensor, and the
        touched occurrences' own squared norms for the gradient cap. A sampled column's gradient
        is hidden^T g_c, so its squared norm is g_c^T (hidden hidden^T) g_c: no (C, h) gradient is built."""
        if not cfg.grad_cap:  # the norm only scales the step; a non-finite gradient still fails the step's
            return MatrixGrads(idx, grad_Wy, touched, np.float32(0))  # check of the new values
        col_norm2 = pt.sum((hidden @ hidden.T @ grad_scores) * grad_scores, axis=0)  # (C,)
        occ_norm2 = pt.sum(pt.switch(col_active, col_norm2, 0))
        if grad_x is not None:  # shared embedding: the input rows' gradients are occurrences too
            occ_norm2 = occ_norm2 + pt.sum(pt.switch(in_touched[:, None], grad_x, 0) ** 2)
        return MatrixGrads(idx, grad_Wy, touched, occ_norm2)

    RUN_TIME = ("learning_rate", "momentum", "lmbd", "dropout_p_embed", "dropout_p_hidden", "logq", "smoothing",
                "bpreg", "grad_cap")

    @classmethod
    def _run_time_values(cls, cfg):
        """The training graph's non-zero continuous hyperparameters, given to it at run time: fits
        (tuning trials) that differ only in their values compile one graph, so they share the
        kept program and XLA's code. A zero stays a constant: it removes its term from the graph."""
        values = {name: getattr(cfg, name) for name in cls.RUN_TIME}
        if cfg.adapt == "adadelta":  # conformance: adadelta (runs at learning rate 1)
            values["learning_rate"] = 1.0
        return {name: value for name, value in values.items() if value}

    def _training_variables(self, cfg, support, store):
        """The training programs' shared variables by name (the model's state, the carried hidden
        states, "ok", BPTT's window, the dropout generator) and their constants (the sample store,
        the log supports, the hyperparameters given at run time)."""
        B, device = cfg.batch_size, cfg.device
        train_vars = {f"hidden_{i}": shared_on_device(np.zeros((B, h), FLOATX), f"hidden_{i}", device)
                      for i, h in enumerate(cfg.layers)}
        train_vars["ok"] = shared_on_device(np.array(True), "ok", device)
        if cfg.bptt > 1:  # the T-1 steps before the current one (gru4rec_lib/sequences.py)
            train_vars.update({key: shared_on_device(value, key, device) for key, value in self._window_start(cfg).items()})
        # only a dropout that is applied (one-hot input has no embedding to drop: # conformance: dropout):
        if cfg.dropout_p_hidden or (cfg.dropout_p_embed and cfg.mode != "none"):  # a fit without one
            train_vars["rng"] = pytensor.shared(self._dropout_rng, name="rng")  # has no generator to carry
        self._store_var = store.var
        log_support = np.log(support).astype(FLOATX)
        consts = [self._store_var, shared_on_device(log_support, "log_support", device),
                  shared_on_device(cfg.sample_alpha * log_support, "log_support_alpha", device)]
        with np.errstate(over="ignore"):  # a value beyond float32's range becomes inf, as a float32 constant would
            consts += [shared_on_device(np.float32(value), f"hyper_{name}", device)
                       for name, value in self._run_time_values(cfg).items()]
        self._train_vars = train_vars
        return {**self._state, **train_vars}, consts

    @float32_graph
    def _compile_train(self, cfg, variables, consts, guard=True):
        """Compile K training steps per call (one step's graph, looped by XLA), state carried on
        device. Without `guard`, the steps' new values are not checked (`_TrainingCalls` checks
        them after each call)."""
        K, B = cfg.steps_per_call, cfg.batch_size
        names = list(variables)
        # the graph of one step on the shared variables, looped K times by XLA (`compile_fn`'s
        # repeat: PyTensor builds and rewrites one step whatever K); inputs and the loss have a
        # leading axis of length 1, one slice per pass of the loop
        seqs = schedule_inputs(1, B) + [pt.tensor("sample_rows", dtype="int32", shape=(1,))]
        outputs = self._train_step(cfg, names, B, *(seq[0] for seq in seqs), *(variables[n] for n in names), *consts,
                                   guard=guard)
        updates = dict(zip((variables[n] for n in names), outputs[:-1]))
        # unguarded: the call also checks the values its K steps leave, in the same program: every
        # loss and gradient norm so far finite ("ok"), every parameter and optimiser state finite
        after = [] if guard else [pt.all(pt.stack([variables["ok"], *all_finite(list(self._state.values()))]))]
        return compile_fn(seqs, outputs[-1][None], updates, reuse=True, repeat=K, program=True, after=after)

    # -- training -----------------------------------------------------------------------------
    def fit(self, data, retrain=False, callbacks=None, allow_pickle=False):
        """Train on session data; returns self.

        Parameters
        ----------
        data : DataFrame or path
            Events with the session, item and time columns (TSV/CSV/Parquet/pickle path accepted).
        retrain : bool, default False
            Continue training the fitted model on `data` (scikit-learn's warm start; # conformance: retrain): the
            weights and the optimiser state (Adagrad accumulators, velocities) are kept, items not
            seen before get new rows initialised as at the start, and sampling popularity is rebuilt
            from `data` (items absent from it keep a support of 1). Shape-changing parameters
            (layers, embedding mode, adapt) cannot change at retrain. A retrain that fails (a bad
            parameter, bad data, a diverging loss, a callback's exception) leaves the model exactly
            as it was before the call.
        callbacks : list of callable or None
            Each is called after every epoch as ``callback(model, stats)``, ``stats`` a copy of the
            epoch's ``epoch_stats_`` entry. If any returns True, training stops after that epoch
            (``stopped_epoch_`` says which); an exception from a callback ends `fit`. See
            `gru4rec_lib.callbacks.Validation` for validation each epoch and early stopping.
        allow_pickle : bool, default False
            Read a ``.pkl``/``.pickle`` path; loading a pickle runs code from the file, so it needs
            this explicit opt-in.

        Raises
        ------
        ModelFitError
            A step's loss or update was not finite: training stops and the model keeps the
            weights of the last step whose loss and update were finite.

        Examples
        --------
        >>> from gru4rec_lib import synthetic
        >>> events = synthetic.generate_sessions(n_sessions=300, n_items=40, seed=0)
        >>> model = GRU4Rec(layers=(16,), n_epochs=1, n_sample=8, show_progress=False).fit(events)
        >>> len(model.epoch_losses_)
        1
        """
        cfg = self.config()
        callbacks = _check_callbacks(callbacks)
        if not retrain:
            return self._fit(cfg, data, False, allow_pickle, callbacks)
        self._check_retrain(cfg)
        snapshot = dict(self.__dict__), self.state_dict()
        try:
            return self._fit(cfg, data, True, allow_pickle, callbacks)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(snapshot[0])
            self._state = {name: shared_on_device(value, name, self._cfg.device) for name, value in snapshot[1].items()}
            self._fns = {}  # compiled against the replaced variables
            raise

    def _fit(self, cfg, data, retrain, allow_pickle, callbacks):
        """Prepare the data, build and compile, train (`fit` after the parameter checks)."""
        started = time.perf_counter()
        reader = sessiondata.SequenceReader(cfg.session_key, cfg.item_key, cfg.time_key, cfg.user_key,
                                            cfg.reset_between_sessions)
        events = reader.load(data, allow_pickle=allow_pickle)
        items = events[cfg.item_key]
        sessiondata.check_item_id_types(items, self.item_ids_ if retrain else None)
        item_map = self.item_map_.extended(items) if retrain else sessiondata.ItemMap.from_events(items)
        try:  # every fitted model can be saved
            modelfile.portable_ids(item_map.ids)
        except ValueError as err:
            raise TypeError(str(err)) from None
        train = reader.group(events, item_map)
        if train.n_steps == 0:
            unit = "user" if cfg.user_key else "session"
            raise ValueError(f"the training data has no {unit} with 2 or more events: nothing to learn from")
        support = np.maximum(train.item_support(len(item_map)), 1)
        init_rng, order_rng, sample_rng, dropout_rng = np.random.default_rng(cfg.seed).spawn(4)
        state = self._grown_state(cfg, len(item_map), init_rng) if retrain else self._new_state(cfg, len(item_map), init_rng)
        self._set_fitted(cfg, item_map, state, support)
        store = SampleStore(support, cfg.sample_alpha, cfg.n_sample, cfg.sample_store, cfg.steps_per_call, sample_rng,
                            cfg.device)
        logger.info("GRU4Rec fit on %s: %d events, %d sessions, %d items", cfg.device, train.n_events,
                    train.n_sessions, len(item_map))
        logger.debug("data prepared in %.2f s", time.perf_counter() - started)
        started = time.perf_counter()
        self._dropout_rng = dropout_rng
        # the first draw runs on the device while PyTensor builds the training function
        fit_steps = None if cfg.train_random_order and cfg.n_epochs else cfg.n_epochs * sessiondata.n_steps(
            train, train.session_order(cfg.time_sort), cfg.batch_size)  # every epoch's schedule is the same
        store.prepare(fit_steps)
        train_fn = _TrainingCalls(self, cfg, store, *self._training_variables(cfg, support, store))
        if cfg.n_epochs:  # all-inactive calls compile XLA off the epoch clock and change no weight;
            K, B = cfg.steps_per_call, cfg.batch_size  # the second call sees the jitted outputs' layouts
            idle = np.zeros((K, B), np.int32), np.ones((K, B), bool), np.zeros((K, B), bool)
            for _ in range(2):
                train_fn(idle[0], idle[0], idle[1], idle[2], np.zeros(K, np.int32))
            train_fn.finish()
        self.compile_seconds_ = time.perf_counter() - started
        logger.debug("training function compiled in %.2f s", self.compile_seconds_)
        self.epoch_losses_, self.epoch_stats_, self.stopped_epoch_ = [], [], None
        for epoch in range(cfg.n_epochs):
            self._train_epoch(cfg, train, train_fn, store, order_rng, epoch)
            if any([callback(self, dict(self.epoch_stats_[-1])) for callback in callbacks]):  # all see it
                self.stopped_epoch_ = epoch + 1
                logger.info("training stopped by a callback after epoch %d of %d", epoch + 1, cfg.n_epochs)
                break
        return self

    def _set_fitted(self, cfg, item_map, state, support):
        self.item_map_ = item_map
        self.item_ids_ = item_map.ids
        self.n_items_ = len(item_map)
        self._param_names = list(self._param_shapes(cfg, self.n_items_))
        self._graph_params = {"layers": cfg.layers, "mode": cfg.mode, "emb_size": cfg.emb_size, "adapt": cfg.adapt}
        self._state = {name: shared_on_device(value, name, cfg.device) for name, value in state.items()}
        self._support = support
        self._cfg = cfg
        self._fitted_params = self.get_params()  # what save writes: set_params takes effect at the next fit
        # new weights or items: no state computed with the old ones is continued (# live sessions too)
        self._fns, self._live, self._predict_state, self._slot_states, self._cand_positions = {}, None, None, None, None

    @staticmethod
    def _steps_after(cfg, epoch, epoch_steps):
        """How many steps the epochs after `epoch` take when that is known exactly, else None: in a
        fixed session order every epoch has this one's `epoch_steps`; a random order is drawn at
        the start of each epoch."""
        later = cfg.n_epochs - epoch - 1
        return None if later and cfg.train_random_order else later * epoch_steps

    def _train_epoch(self, cfg, train, train_fn, store, order_rng, epoch):
        """One pass over the sessions; logs loss, seconds, mini-batches/s and events/s."""
        K, B = cfg.steps_per_call, cfg.batch_size
        order = train.session_order(cfg.time_sort, order_rng if cfg.train_random_order else None)
        total = sessiondata.n_steps(train, order, B)
        later = self._steps_after(cfg, epoch, total)  # the sample store draws only the rows the fit uses
        started, loss_sum, n_rows, n_steps, pending, left = time.perf_counter(), 0.0, 0, 0, None, total
        with progress.bar(total, f"epoch {epoch + 1}/{cfg.n_epochs}", cfg.show_progress) as bar:
            for index, chunk in enumerate(sessiondata.session_parallel_schedule(train, order, B, K)):
                step_active = chunk.active.any(axis=1)
                if store.needs_refill(step_active):  # the calls so far read the rows it replaces
                    train_fn.settle(new_segment=True)
                rows, _ = store.rows_for(step_active, None if later is None else left + later)
                left -= int(step_active.sum())
                # the previous call's losses, read now: the device runs this call meanwhile
                losses = train_fn(chunk.inputs, chunk.targets, chunk.reset, chunk.active, rows)
                if pending is not None:
                    loss_sum, n_rows, n_steps = self._tally((losses, *pending), loss_sum, n_rows, n_steps, epoch, K)
                    bar.set_postfix(loss=f"{loss_sum / max(n_rows, 1):.4f}", refresh=False)
                step_rows = chunk.active.sum(axis=1)
                pending = (np.where(step_rows >= (1 if cfg.n_sample else 2), step_rows, 0), index)
                bar.update(int(step_active.sum()))
                if index == 0:  # the first call may still compile: keep it out of the estimate
                    progress.restart_clock(bar)
            loss_sum, n_rows, n_steps = self._tally((train_fn.finish(), *pending), loss_sum, n_rows, n_steps,
                                                    epoch, K)
        seconds = time.perf_counter() - started
        stats = {"epoch": epoch + 1, "loss": loss_sum / n_rows, "seconds": seconds,
                 "batches_per_s": n_steps / seconds, "events_per_s": train.n_steps / seconds}
        self.epoch_losses_.append(stats["loss"])
        self.epoch_stats_.append(stats)
        logger.info("epoch %d: loss %.6f, %.2f s, %.0f mini-batches/s, %.0f events/s", epoch + 1, stats["loss"],
                    seconds, stats["batches_per_s"], stats["events_per_s"])

    @staticmethod
    def _tally(pending, loss_sum, n_rows, n_steps, epoch, K):
        """Add one call's losses (a device sync), each step weighted by its active rows, as the
        authors' epoch loss is (# conformance: epoch loss); raise ModelFitError on a non-finite loss."""
        losses, step_rows, index = pending
        step_active = step_rows > 0
        values = np.asarray(losses)[step_active]
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            step = index * K + int(np.flatnonzero(step_active)[bad[0]]) + 1
            raise ModelFitError(f"non-finite loss or update in epoch {epoch + 1}, mini-batch {step}; the model "
                                "keeps the weights of the last step whose loss and update were finite. Try a "
                                "lower learning_rate or grad_cap > 0.")
        rows = step_rows[step_active]
        return loss_sum + float(values @ rows), n_rows + int(rows.sum()), n_steps + len(values)

    # -- prediction ---------------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "item_map_"):
            raise NotFittedError(f"this {type(self).__name__} instance is not fitted yet: call fit first")

    def _weights(self):
        return {name: self._state[name] for name in self._param_names}

    def _scores(self, hidden_last, cand_idx, weights=None):
        """final_act(h . Wy[cand] + By[cand]) (B, n_cand); softmax over the candidates."""
        weights = weights or self._weights()
        scores = hidden_last @ weights["Wy"][cand_idx].T + weights["By"][cand_idx]
        if self._cfg.final_act in ("softmax", "softmax_logit"):
            return pt.special.softmax(scores, axis=1)
        return activation(self._cfg.final_act)(scores)

    def _rank_activation(self):
        """final_act for ranking: elementwise as trained; softmax is ranked on its logits (same order,
        without float32 underflow turning distinct small probabilities into ties)."""
        if self._cfg.final_act in ("softmax", "softmax_logit"):
            return lambda x: x
        return activation(self._cfg.final_act)

    def _step_graph(self, item_idx, reset, hidden):
        """Inference step (no dropout): hidden states after feeding `item_idx`, zeroed where `reset`."""
        cfg, weights = self._cfg, self._weights()
        hidden = [pt.switch(reset[:, None], 0, h) for h in hidden]
        x_rows = weights[self._input_name(cfg)][item_idx]
        return self._forward(cfg, weights, x_rows, hidden)[1]

    @float32_graph
    def _feed_fn(self):
        """Compiled (item_idx, reset, *hidden) -> new hidden states; any batch size."""
        key = ("feed", self._cfg)
        if key not in self._fns:
            item_idx, reset = pt.ivector("item_idx"), pt.vector("reset", dtype="bool")
            hidden = [pt.matrix(f"hidden_{i}", dtype=FLOATX) for i in range(len(self._cfg.layers))]
            self._fns[key] = compile_fn([item_idx, reset, *hidden], self._step_graph(item_idx, reset, hidden),
                                         donate=False)
        return self._fns[key]

    @float32_graph
    def _score_fn(self):
        """Compiled (hidden_last, cand_idx) -> final_act scores (B, n_cand)."""
        key = ("score", self._cfg)
        if key not in self._fns:
            hidden_last, cand_idx = pt.matrix("hidden_last", dtype=FLOATX), pt.ivector("cand_idx")
            self._fns[key] = compile_fn([hidden_last, cand_idx], self._scores(hidden_last, cand_idx), donate=False)
        return self._fns[key]

    def _zero_hidden(self, batch):
        return [device_put(np.zeros((batch, h), FLOATX), self._cfg.device) for h in self._cfg.layers]

    def _candidates(self, item_ids):
        """Item ids -> int32 indices (all items when None); unknown ids raise ValueError."""
        if item_ids is None:
            return np.arange(self.n_items_, dtype=np.int32)
        return self.item_map_.lookup(item_ids)

    # -- the model interface (gru4rec_lib.interface.SessionModel) ---------------------------
    def reset_state(self, slots=None):
        """Start the given slots (an int array; all when None) from the zero state.

        Applies to the slots of `score_step` and of `score_steps` (the evaluation's slots).
        """
        self._check_fitted()
        for key, value in self._fns.items():
            if key[0] == "score_steps":
                for var in value[1]:
                    zeroed = np.zeros(var.type.shape, FLOATX) if slots is None else np.array(var.get_value())
                    zeroed[slots if slots is not None else slice(None)] = 0
                    set_on_device(var, zeroed, self._cfg.device)
        slot_states = getattr(self, "_slot_states", None)
        if slots is None or slot_states is None:
            self._slot_states = None
        else:
            self._slot_states = [np.where(np.isin(np.arange(len(h)), slots)[:, None], 0, h).astype(FLOATX)
                                 for h in slot_states]

    def score_step(self, reset, input_idx, active):
        """Feed every slot one item (by index); final_act scores (B, n_items_) of each slot's next item.

        Slots where `reset` is true start from zero first; inactive slots keep their state and
        score 0. Before the first call (and after `reset_state`) every slot is at zero.

        Examples
        --------
        >>> from gru4rec_lib import synthetic
        >>> events = synthetic.generate_sessions(n_sessions=300, n_items=40, seed=0)
        >>> model = GRU4Rec(layers=(16,), n_epochs=1, n_sample=8, show_progress=False).fit(events)
        >>> model.score_step([True, True], [0, 5], [True, True]).shape
        (2, 40)
        """
        reset, input_idx, active = self._check_step(reset, input_idx, active)
        hidden = getattr(self, "_slot_states", None)
        if hidden is None or len(hidden[0]) != len(active):
            hidden = [np.zeros((len(active), h), FLOATX) for h in self._cfg.layers]
        new = [np.asarray(h) for h in self._feed_fn()(input_idx.astype(np.int32), reset, *hidden)]
        self._slot_states = [np.where(active[:, None], n, h) for n, h in zip(new, hidden)]
        scores = np.asarray(self._score_fn()(self._slot_states[-1], np.arange(self.n_items_, dtype=np.int32)))
        return np.where(active[:, None], scores, 0).astype(FLOATX)

    def score_steps(self, chunk, reduction, candidates=None, keep_values=False, start=None):
        """K steps of B slots and their reduction as one compiled call on the device.

        See `gru4rec_lib.interface.SessionModel.score_steps`. The returned arrays stay on the
        device until read. Scores are ranked as final_act gives them, softmax on its logits
        (same order, without float32 underflow turning small probabilities into ties).
        `start` (a `gru4rec_lib.sequences.StartStates`) continues user sequences.
        """
        self._check_fitted()
        K, B = chunk.active.shape
        key = ("score_steps", K, B, reduction, candidates is None, keep_values, start is not None)
        if key not in self._fns:
            self._fns[key] = self._compile_score_steps(K, B, reduction, candidates is not None, keep_values,
                                                       start is not None)
        extra = reduction.draws(chunk) + (start.step_inputs(chunk) if start is not None else [])
        cand = [] if candidates is None else [candidates, self._positions(candidates)]
        out = self._fns[key][0](chunk.inputs, chunk.targets, chunk.reset, chunk.active, *extra, *cand)
        return out[0], (out[1] if keep_values else None)

    def _positions(self, cand_idx):
        """(n_items,) int32: position of each item among the candidates, -1 if absent (cached)."""
        cached = getattr(self, "_cand_positions", None)
        if cached is None or not np.array_equal(cached[0], cand_idx):  # by value: the caller may reuse the array
            pos = np.full(self.n_items_, -1, dtype=np.int32)
            pos[cand_idx] = np.arange(len(cand_idx), dtype=np.int32)
            self._cand_positions = cached = (np.array(cand_idx, copy=True), pos)
        return cached[1]

    @float32_graph
    def _compile_score_steps(self, steps, batch_size, reduction, subset, keep_values, continued):
        """Compile K steps: feed the inputs, score, reduce per step, then the chunk; hidden state on device."""
        cfg = self._cfg
        hidden = [shared_on_device(np.zeros((batch_size, h), FLOATX), f"eval_hidden_{i}", cfg.device)
                  for i, h in enumerate(cfg.layers)]
        n_layers, n_draws = len(hidden), reduction.n_draws
        seqs = schedule_inputs(steps, batch_size) + [
            pt.tensor(f"draw_{i}", shape=(steps, batch_size), dtype=FLOATX) for i in range(n_draws)]
        seqs += start_inputs(steps, batch_size, cfg.layers) if continued else []
        cand = [pt.ivector("cand_idx"), pt.ivector("cand_pos")] if subset else []

        def step(item_idx, target_idx, reset, active, *args):
            draws, args = args[:n_draws], args[n_draws:]
            if continued:
                reset, args = start_from(reset, args, n_layers)
            new_states = self._step_graph(item_idx, reset, list(args[:n_layers]))
            scores, target, in_scores = self._target_scores(new_states[-1], target_idx, *args[n_layers:])
            values = reduction.step(scores, target, in_scores, pt, *draws)
            return [*new_states, pt.switch(active, values, 0).astype(FLOATX)]

        outputs = pytensor.scan(step, sequences=seqs, outputs_info=[*hidden, None], non_sequences=cand,
                                n_steps=steps, return_updates=False)
        values = outputs[-1]  # (K, B)
        totals = pt.stack(reduction.total(values, seqs[3], pt)).astype(FLOATX)
        updates = {var: out[-1] for var, out in zip(hidden, outputs[:-1])}
        return compile_fn(seqs + cand, [totals, values] if keep_values else [totals], updates, reuse=True), hidden

    def _target_scores(self, hidden_last, target_idx, cand_idx=None, cand_pos=None):
        """Scores (B, C) of all items or the candidates, each target's score (B,), and whether it is scored."""
        weights, act = self._weights(), self._rank_activation()
        rows = pt.arange(target_idx.shape[0], dtype="int32")
        if cand_idx is None:
            scores = act(hidden_last @ weights["Wy"].T + weights["By"])  # (B, n_items)
            return scores, scores[rows, target_idx], 1
        scores = act(hidden_last @ weights["Wy"][cand_idx].T + weights["By"][cand_idx])  # (B, n_cand)
        own = act(pt.sum(hidden_last * weights["Wy"][target_idx], axis=1) + weights["By"][target_idx])
        pos = cand_pos[target_idx]
        in_scores = pos >= 0
        target = pt.switch(in_scores, scores[rows, pt.maximum(pos, 0)], own)  # the column itself where scored
        return scores, target, in_scores

    def predict_next_batch(self, session_ids, input_item_ids, predict_for_item_ids=None, batch=100):
        """Scores of the next item for `batch` parallel sessions (the reference's stateful API).

        Slot i keeps its hidden state while ``session_ids[i]`` equals its value at the previous call
        and starts from zero when it changes (or when `batch` changes).

        Parameters
        ----------
        session_ids : array-like (batch,)
        input_item_ids : array-like (batch,)
            The current item of each slot; unknown ids raise ValueError.
        predict_for_item_ids : array-like or None
            Score only these items (final_act softmax is then taken over them); None: all items.
            A repeated id is scored once per occurrence, as in the authors' code, so with softmax
            its copies share the probability mass.
        batch : int, default 100

        Returns
        -------
        DataFrame (n_items or len(predict_for_item_ids), batch): index = item ids, column i = slot i.

        Examples
        --------
        >>> from gru4rec_lib import synthetic
        >>> events = synthetic.generate_sessions(n_sessions=300, n_items=40, seed=0)
        >>> model = GRU4Rec(layers=(16,), n_epochs=1, n_sample=8, show_progress=False).fit(events)
        >>> model.predict_next_batch([7, 8], events.ItemId.values[:2], batch=2).shape
        (40, 2)
        """
        self._check_fitted()
        if not sessiondata.is_int(batch) or batch < 1:
            raise ValueError(f"batch={batch!r} is invalid: expected a positive int")
        for name, values in (("session_ids", session_ids), ("input_item_ids", input_item_ids)):
            if isinstance(values, (str, bytes, set, dict)) or not hasattr(values, "__iter__"):
                raise TypeError(f"{name} must be a list, array or Series of length batch={batch}, "
                                f"got {type(values).__name__}")
        session_ids, inputs = sessiondata.id_array(session_ids), sessiondata.id_array(input_item_ids)
        if len(session_ids) != batch or len(inputs) != batch:
            raise ValueError(f"session_ids and input_item_ids need length batch={batch} "
                             f"(got {len(session_ids)} and {len(inputs)})")
        item_idx, cand_idx = self._candidates(inputs), self._candidates(predict_for_item_ids)
        state = getattr(self, "_predict_state", None)
        if state is None or len(state[0]) != batch:
            state = (np.full(batch, None, dtype=object), self._zero_hidden(batch))
        reset = np.array([a != b for a, b in zip(state[0], session_ids)], dtype=bool)
        hidden = self._feed_fn()(item_idx, reset, *state[1])
        scores = self._score_fn()(hidden[-1], cand_idx)
        self._predict_state = (session_ids.astype(object), hidden)
        scores = np.asarray(scores)
        if not np.all(np.isfinite(scores)):
            raise ValueError("the model's scores are not finite (NaN or inf): its weights are damaged or "
                             "overflow float32; refit or load a good model")
        return pd.DataFrame(scores.T, index=self.item_ids_[cand_idx])  # the ids as the model holds them

    # -- persistence --------------------------------------------------------------------------
    def state_dict(self):
        """The fitted state as a dict of new float32 numpy arrays, by name.

        Weights use the formula's symbols (``E``, ``Wx_0``, ``Wh_0``, ``Bh_0``, ..., ``Wy``, ``By``);
        optimiser state and velocities are ``'acc/Wy'``, ``'velocity/Wy'`` and the like; ``'step'``
        counts the optimiser steps. Changing the arrays does not change the model.
        """
        self._check_fitted()
        return {name: np.array(var.get_value(borrow=True), copy=True) for name, var in self._state.items()}

    def load_state_dict(self, state, item_ids=None, support=None):
        """Set the fitted state from a `state_dict`-like dict; returns self.

        Every array is checked against the current parameters and the item count: the names
        (nothing missing, nothing extra), the shapes, float32 dtype and finite values. A ValueError
        names the first problem; the model is then unchanged.

        Parameters
        ----------
        state : dict of str to ndarray
        item_ids : array-like or None
            The item id of each row of the item matrices; None keeps the fitted model's ids.
        support : array-like or None
            Item supports for negative sampling at a later retrain; None: the fitted model's
            (when the item count is unchanged), else 1 for every item.
        """
        cfg = self.config()
        if item_ids is None:
            self._check_fitted()
            item_map = self.item_map_
        else:
            item_map = sessiondata.ItemMap(modelfile.portable_ids(item_ids))
        n_items = len(item_map)
        arrays = modelfile.checked_state(self._expected_state(cfg, n_items), state)
        negative = [name for name in arrays if name.split("/")[0] in ACCUMULATORS and np.any(arrays[name] < 0)]
        if negative:
            raise ValueError(f"state {negative[0]!r} has negative values: an optimiser's sum of squares or count "
                             "never does")
        if support is None:
            same = hasattr(self, "_support") and len(self._support) == n_items
            support = self._support if same else np.ones(n_items)
        if np.asarray(support).dtype.kind not in "iuf":
            raise ValueError(f"support has dtype {np.asarray(support).dtype}: expected numbers")
        support = np.asarray(support, dtype=np.float64)
        if support.shape != (n_items,) or not np.all(np.isfinite(support)) or np.any(support < 1):
            raise ValueError(f"support has shape {support.shape} or values below 1: expected ({n_items},) finite "
                             "numbers >= 1")
        self._set_fitted(cfg, item_map, arrays, support)
        return self

    def _expected_state(self, cfg, n_items):
        """name -> shape of every state array a fitted model with these parameters holds."""
        expected = {}
        for name, (shape, _) in self._param_shapes(cfg, n_items).items():
            expected[name] = shape
            expected.update({key: Optimizer.state_shape(key, shape) for key in self._optimizer_keys(cfg, name)})
        expected["step"] = ()
        return expected

    def save(self, path):
        """Write the fitted model to one ``.npz`` file, atomically (temporary file + rename).

        The file holds the hyperparameters the model was fitted with as JSON (not values given
        to `set_params` since), the item ids, the item supports, the weights and the optimiser
        state (so that ``fit(..., retrain=True)`` continues after a load); not the live sessions
        of `recommend` nor the slots of `predict_next_batch`. No
        pickle: item ids must be ints or strings. Non-finite weights are refused (ValueError);
        a failed write leaves no temporary file and an existing file at `path` unchanged.
        """
        state = self.state_dict()
        for name, value in state.items():
            if not np.all(np.isfinite(value)):
                raise ValueError(f"cannot save: state {name!r} is not finite (NaN or inf); the model is damaged")
        arrays = {f"state/{name}": value for name, value in state.items()}
        arrays.update(format_version=np.array(FORMAT_VERSION), item_ids=modelfile.portable_ids(self.item_ids_),
                      support=self._support, epoch_losses=np.asarray(getattr(self, "epoch_losses_", []), float),
                      params_json=np.array(json.dumps(self._fitted_params, default=modelfile.json_scalar)),
                      library_version=np.array(__version__))
        return modelfile.atomic_savez(os.fspath(path), arrays)

    @classmethod
    def load(cls, path, device=None):
        """Load a model written by `save` onto `device` (None: JAX's default, with or without a GPU).

        The whole file is checked before a model is built: readable as ``.npz`` without pickle,
        a known format version, parameters that pass the checks of `fit`, item ids and arrays
        whose names, shapes, dtypes and values agree. Any problem raises one ValueError
        "not a gru4rec model file: PATH (what is wrong)".
        """
        resolve_device(device)  # a missing accelerator is the caller's problem, not the file's
        arrays = modelfile.read_npz(path)
        try:
            model = cls()
            model.set_params(**{**modelfile.file_params(arrays), "device": device})
            for key in ("item_ids", "support"):
                if key not in arrays:
                    raise ValueError(f"missing array {key!r}")
            item_ids = arrays["item_ids"]
            if item_ids.ndim != 1 or item_ids.dtype.kind not in "iuUfb":
                raise ValueError(f"item_ids has dtype {item_ids.dtype} and shape {item_ids.shape}: expected "
                                 "one row of ints or strings")
            state = {key[len("state/"):]: value for key, value in arrays.items() if key.startswith("state/")}
            model.load_state_dict(state, item_ids=item_ids, support=arrays["support"])
            losses = np.asarray(arrays.get("epoch_losses", []), float)
            if losses.ndim != 1 or not np.all(np.isfinite(losses)):
                raise ValueError("epoch_losses must be one row of finite numbers")
            model.epoch_losses_ = losses.tolist()
        except (ValueError, TypeError) as err:
            raise ValueError(f"not a gru4rec model file: {path} ({err})") from None
        return model


PARAM_NAMES = tuple(name for name in inspect.signature(GRU4Rec.__init__).parameters if name != "self")
Config = dataclasses.make_dataclass("Config", [*PARAM_NAMES, "mode", "emb_size", "adapt_consts"], frozen=True)
Config.__module__ = __name__
Config.__doc__ = ("Frozen, hashable configuration of a fit: every constructor parameter (validated, `layers` a "
                  "tuple, `device` resolved) plus the derived mode, emb_size and adapt_consts. Built by "
                  "`gru4rec_lib.config.make_config`; keys the cache of compiled functions.")


