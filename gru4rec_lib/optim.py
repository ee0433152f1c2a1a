"""The optimisers of GRU4Rec as pure functions on PyTensor graphs (see docs/conformance.md).

Every function takes a parameter, its gradient and its optimiser state and returns new values;
nothing here owns a variable. `dense_update` treats a whole parameter; `rows_update` the rows of
an item matrix that one step touched, given as gathered rows with their (coalesced) gradients;
`matrix_update` the same step computed over the whole item matrix with untouched rows kept.
`apply_gradients` runs one training step's updates: the gradient cap, the finiteness guard and
the per-parameter updates, and returns every new value by state key.

The update of one parameter p with gradient g (all elementwise; d is the optimiser's direction):

    adagrad   acc' = acc + g^2;                  d = g / sqrt(acc' + eps)
    rmsprop   acc' = rho acc + (1 - rho) g^2;    d = g / sqrt(acc' + eps)
    adadelta  acc' = rho acc + (1 - rho) g^2;    d = g sqrt((delta + eps) / (acc' + eps)),
              delta' = rho delta + (1 - rho) d^2 (learning rate forced to 1)
    adam      m' = b1 m + (1 - b1) g;  v' = b2 v + (1 - b2) g^2;
              d = (m' / (1 - b1^t)) / (sqrt(v' / (1 - b2^t)) + eps), t counted per row on item matrices
    None      d = g (plain SGD)

    step = -lr (d + lmbd p)                      (L2 decoupled from the adaptive scaling)
    momentum: vel' = mu vel + step; p' = p + vel'; else p' = p + step
"""
import logging
from dataclasses import dataclass, field

import numpy as np
import pytensor.tensor as pt
from pytensor.ifelse import ifelse

from gru4rec_lib.backend import FLOATX, settled

logger = logging.getLogger(__name__)
ITEM_UPDATES = ("auto", "rows", "matrix")
MATRIX_UPDATE_RATIO = 2  # "auto": whole-matrix updates up to this many rows per row a step touches

OPTIMIZER_DEFAULTS = {
    "adagrad": {"epsilon": 1e-6},
    "rmsprop": {"decay": 0.9, "epsilon": 1e-6},
    "adadelta": {"decay": 0.95, "epsilon": 1e-6},
    "adam": {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-6},
    None: {},
}
OPTIMIZER_STATES = {"adagrad": ("acc",), "rmsprop": ("acc",), "adadelta": ("acc", "acc_delta"),
                    "adam": ("m", "v"), None: ()}


def is_zero(value):
    """Whether a hyperparameter is a plain number equal to 0 (a symbolic scalar never is: only
    non-zero values are given as graph inputs, so that 0 can switch a term off altogether)."""
    return isinstance(value, (int, float, np.number)) and value == 0


def f32(value):
    """A plain number as a float32 constant; a symbolic scalar as it is."""
    return np.float32(value) if isinstance(value, (int, float, np.number)) else value


@dataclass(frozen=True)
class Optimizer:
    """The optimiser's constants: adapt, its constants, learning rate, momentum and L2 strength.

    `inputs` may give symbolic float32 scalars for 'learning_rate', 'momentum' and 'lmbd' (the
    graph then takes their values at run time, so that fits differing only in them share one
    compiled program); the fields keep the numbers, which decide which terms exist.
    """

    adapt: str = "adagrad"
    consts: dict = field(default_factory=dict)
    learning_rate: float = 0.1
    momentum: float = 0.0
    lmbd: float = 0.0
    inputs: dict = field(default_factory=dict)

    def value(self, name):
        """The symbolic scalar given for `name`, else its number as a float32 constant."""
        return self.inputs[name] if name in self.inputs else np.float32(getattr(self, name))

    @classmethod
    def from_config(cls, cfg):
        """Build from checked hyperparameters; adadelta runs at learning rate 1 (with a warning).

        # conformance: adadelta
        """
        lr = cfg.learning_rate
        if cfg.adapt == "adadelta" and lr != 1.0:
            logger.warning("adadelta takes no learning rate: learning_rate=%s is replaced by 1.0", lr)
            lr = 1.0
        return cls(cfg.adapt, dict(cfg.adapt_consts), float(lr), float(cfg.momentum), float(cfg.lmbd))

    def state_keys(self, name, sparse):
        """State keys of parameter `name`: optimiser state, Adam's per-row count, velocity."""
        keys = [f"{s}/{name}" for s in OPTIMIZER_STATES[self.adapt]]
        if self.adapt == "adam" and sparse:
            keys.append(f"count/{name}")
        return keys + ([f"velocity/{name}"] if self.momentum else [])

    @staticmethod
    def state_shape(key, param_shape):
        """Shape of a state array: a per-row vector for Adam's counts, else the parameter's."""
        return param_shape[:1] if key.startswith("count/") else param_shape


# ---------------------------------------------------------------- the elementwise rules
def moments(opt, grad, state):
    """The accumulators that depend on the gradient only: {short state name: new value}."""
    c = opt.consts
    if opt.adapt == "adagrad":
        return {"acc": state["acc"] + grad ** 2}
    if opt.adapt in ("rmsprop", "adadelta"):
        return {"acc": np.float32(c["decay"]) * state["acc"] + np.float32(1 - c["decay"]) * grad ** 2}
    if opt.adapt == "adam":
        return {"m": np.float32(c["beta1"]) * state["m"] + np.float32(1 - c["beta1"]) * grad,
                "v": np.float32(c["beta2"]) * state["v"] + np.float32(1 - c["beta2"]) * grad ** 2}
    return {}


def direction(opt, grad, state, new, count):
    """The scaled gradient d, and the states that depend on it ({short name: new value}).

    `new` holds the values of `moments`; `count` is Adam's step number t (scalar or per row).
    """
    c = opt.consts
    if opt.adapt in ("adagrad", "rmsprop"):
        return grad / pt.sqrt(new["acc"] + np.float32(c["epsilon"])), {}
    if opt.adapt == "adadelta":
        eps, rho = np.float32(c["epsilon"]), np.float32(c["decay"])
        d = grad * pt.sqrt((state["acc_delta"] + eps) / (new["acc"] + eps))
        return d, {"acc_delta": rho * state["acc_delta"] + (1 - rho) * d ** 2}
    if opt.adapt == "adam":
        m_hat = new["m"] / (1 - np.float32(c["beta1"]) ** count)
        v_hat = new["v"] / (1 - np.float32(c["beta2"]) ** count)
        return m_hat / (pt.sqrt(v_hat) + np.float32(c["epsilon"])), {}
    return grad, {}


def descend(opt, param, d, velocity):
    """(change of the parameter, new velocity): -lr (d + lmbd p), through momentum when set."""
    step = -opt.value("learning_rate") * (d + opt.value("lmbd") * param if opt.lmbd else d)
    if not opt.momentum:
        return step, None
    velocity = opt.value("momentum") * velocity + step
    return velocity, velocity


def _short(key):
    return key.split("/")[0]


# ---------------------------------------------------------------- one parameter
def step_values(opt, param, grad, old, count=None, counted=None, stage=None):
    """{short name: new value} of one optimiser step, the parameter's under "param".

    `old`: short state name -> old value (the whole parameter's, or gathered rows). `count` is
    Adam's global step number t; with per-row counts (`old["count"]`) each row's count grows by
    `counted` (1, or 1 where a row was touched) and is its own t. `stage`, when given, maps
    {short name: new value} to the values the later rules read: it is applied to the moments
    (and counts), then to the states computed from the direction (and the velocity), so that
    each is computed in full before it is read (`matrix_update`).
    """
    new = moments(opt, grad, old)
    if "count" in old:  # Adam on an item matrix: each row counts its own steps
        new["count"] = old["count"] + counted
    if stage is not None:
        new = stage(new)
    if "count" in old:
        count = pt.maximum(new["count"], 1).reshape((-1,) + (1,) * (grad.ndim - 1))
    d, extra = direction(opt, grad, old, new, count)
    change, velocity = descend(opt, param, d, old.get("velocity"))
    if velocity is not None:
        extra["velocity"] = velocity
    if stage is not None and extra:
        extra = stage(extra)
        change = extra.get("velocity", change)
    new.update(extra)
    new["param"] = param + change
    return new


def dense_update(opt, name, param, grad, state, count):
    """New values of a whole parameter and of its state keys (`state`: key -> array).

    Returns {name: new parameter, key: new state}; `count` is the global step number t.
    """
    new = step_values(opt, param, grad, {_short(k): v for k, v in state.items()}, count)
    out = {key: new[_short(key)] for key in state}
    out[name] = new["param"]
    return out


def _scatter(full, idx, old, new, share, apply):
    """`full` with each occurrence adding `share` of its row's change (the shares of a row sum to 1).

    A switch, not a product alone: a non-finite change (a failed step, or an untouched
    occurrence's Adam count of 0) times a zero share would still be NaN.
    """
    share = share.reshape((-1,) + (1,) * (old.ndim - 1))
    return pt.inc_subtensor(full[idx], pt.switch(apply & (share > 0), new - old, 0) * share)


def row_values(opt, idx, rows, grad, state):
    """New values of the touched rows of an item matrix and of its state, from the gathered rows.

    `rows` = full[idx] (n_occ, ...), `grad` the summed gradient of each occurrence's row
    (`coalesce`), `state`: key -> the whole state matrix. Returns ({short name: old rows},
    {short name: new rows}), the parameter under the short name "param". Computed once per
    step: the finiteness guard checks these values and `rows_update` writes them.
    """
    old = {_short(k): state[k][idx] for k in state}
    new = step_values(opt, rows, grad, old, counted=1)
    old["param"] = rows
    return old, new


def rows_update(name, full, idx, old, new, share, state, apply):
    """An item matrix and its state with the touched rows written ({key: new matrix}).

    `old`/`new` from `row_values`; `share` (n_occ,) each occurrence's part of its row's change;
    `apply` a scalar bool (False: nothing changes). Every gather from a matrix precedes its
    scatter, so XLA updates the matrices in place.
    """
    out = {key: _scatter(state[key], idx, old[_short(key)], new[_short(key)], share, apply) for key in state}
    out[name] = _scatter(full, idx, old["param"], new["param"], share, apply)
    return out


# ---------------------------------------------------------------- one training step
def coalesce(idx, grad, touched):
    """Sum the gradients of occurrences of the same row: (summed gradient per occurrence, share).

    A segment sum over the sorted indices (O(occurrences), no n_items-sized buffer). `share` is
    1/count for the touched occurrences of a row (count = its touched occurrences) and 0 for the
    others, so a row takes exactly one optimiser step on its summed gradient.
    """
    n_occ = idx.type.shape[0]
    flat = grad.reshape((n_occ, -1)) if grad.ndim > 1 else grad[:, None]
    width = flat.type.shape[1]
    ext = pt.concatenate([flat, touched[:, None].astype(grad.dtype)], axis=1)
    first = pt.searchsorted(pt.sort(idx), idx).astype("int32")  # one segment per distinct value
    summed = pt.inc_subtensor(pt.zeros((n_occ, width + 1), dtype=grad.dtype)[first], ext)[first]
    share = touched / pt.maximum(summed[:, width], 1)
    return summed[:, :width].reshape(grad.shape), share.astype(grad.dtype)


@dataclass
class RowGrads:
    """The touched rows of one item matrix: indices, gathered rows, per-occurrence gradients, touched."""

    idx: object
    rows: object
    grad: object
    touched: object


@dataclass
class MatrixGrads:
    """One item matrix's gradient already summed over the whole matrix (`grad`, the matrix's shape,
    untouched occurrences contributing nothing), with the step's occurrences (`idx`, `touched`) and
    the sum over the touched occurrences of their own gradients' squared norms (`occ_norm2`, for
    the gradient cap). Always updated by `matrix_update`."""

    idx: object
    grad: object
    touched: object
    occ_norm2: object


def grad_norm2(dense_grads, row_grads):
    """Squared norm of the step's gradient: dense parameters plus every touched occurrence's row gradient.

    # conformance: grad_cap (per occurrence, before the L2 term)
    """
    total = sum(pt.sum(g ** 2) for g in dense_grads.values())
    for r in row_grads.values():
        if isinstance(r, MatrixGrads):
            total = total + r.occ_norm2
            continue
        per_occ = r.grad ** 2 if r.grad.ndim == 1 else pt.sum(r.grad ** 2, axis=tuple(range(1, r.grad.ndim)))
        total = total + pt.sum(pt.switch(r.touched, per_occ, 0))
    return total


def all_finite(values, keep=None):
    """Whether every entry of `values` is finite, where `keep` ((n_rows,) bool; None: everywhere)
    holds. Arrays of one shape share one pass: the largest magnitude over all of them is finite
    exactly when each entry is (abs and max carry inf and NaN through), so the check reads each
    array once and makes no boolean copy of it."""
    by_shape = {}
    for i, value in enumerate(values):  # a shape not known statically is a group of its own
        shape = value.type.shape
        by_shape.setdefault(shape if None not in shape else i, []).append(value)
    checks = []
    for group in by_shape.values():
        largest = pt.abs(group[0])
        for value in group[1:]:
            largest = pt.maximum(largest, pt.abs(value))
        if keep is not None:
            largest = pt.switch(keep.reshape((-1,) + (1,) * (largest.ndim - 1)), largest, 0)
        checks.append(pt.isfinite(pt.max(largest)))
    return checks


def _rows_finite(new, share):
    """Whether the new values of the touched rows (parameter and state) are finite (`row_values`'
    results; rows no touched occurrence changes are not checked)."""
    return all_finite(new.values(), share > 0)


def matrix_update(opt, name, full, idx, grad, touched, state, summed=False, written=None):
    """New values of a whole item matrix and its state from the touched occurrences' gradients.

    The same step as `coalesce` + `row_values` + `rows_update`, computed over every row: the
    occurrences' gradients are summed into a matrix (each row's summed gradient), and the caller
    keeps the old values of rows that no touched occurrence names (`mask`, (n_rows, 1) or
    (n_rows,); `matrix_write`). Fewer, larger operations than the row path: faster when the
    catalogue is not much larger than the rows one step touches (`use_matrix_update`).
    With `summed`, `grad` is that matrix already (`MatrixGrads`), not per occurrence.
    With `written` (a scalar bool: whether the step applies at all) the values returned are
    already written: the new ones on the touched rows when `written` holds, the old ones
    elsewhere; each state is then written before the rules after it read it (`backend.Settled`),
    so that every array is read once and updated in place.
    Returns ({key: new value}, mask).
    """
    if not summed:
        weight = touched.astype(grad.dtype).reshape((-1,) + (1,) * (grad.ndim - 1))
        grad = pt.inc_subtensor(pt.zeros(full.shape, dtype=grad.dtype)[idx], grad * weight)
    hits = pt.inc_subtensor(pt.zeros((full.shape[0],), dtype=grad.dtype)[idx], touched.astype(grad.dtype))
    mask = (hits > 0).reshape((-1,) + (1,) * (grad.ndim - 1))
    old = {_short(k): v for k, v in state.items()}
    stage = None
    if written is not None:
        keep = mask & written
        old_values = {**old, "param": full}

        def stage(values):
            return settled({k: pt.switch(_keep_unmasked(keep, v), v, old_values[k]) for k, v in values.items()})
    new = step_values(opt, full, grad, old, counted=(hits > 0).astype(grad.dtype), stage=stage)
    if written is not None:
        new["param"] = pt.switch(keep, new["param"], full)
    out = {key: new[_short(key)] for key in state}
    out[name] = new["param"]
    return out, mask


def matrix_write(name, full, values, mask, state):
    """An item matrix and its state after `matrix_update` ({key: new matrix}): the new values on
    the masked (touched) rows, the old ones elsewhere (`apply_gradients` then keeps or drops the
    whole step)."""
    old = {**state, name: full}
    return {k: pt.switch(_keep_unmasked(mask, v), v, old[k]) for k, v in values.items()}


def use_matrix_update(item_update, n_rows, n_occurrences):
    """Whether an item matrix of `n_rows` rows, `n_occurrences` of them named per step, is updated
    whole (`matrix_update`) or by its touched rows: `item_update` 'matrix', 'rows' or 'auto' (whole
    up to MATRIX_UPDATE_RATIO rows per occurrence; bench/README measured the two equal near 2.5)."""
    if item_update == "auto":
        return n_rows is not None and n_occurrences is not None and n_rows <= MATRIX_UPDATE_RATIO * n_occurrences
    return item_update == "matrix"


def _keep_unmasked(mask, value):
    return mask if value.ndim > 1 else mask.flatten()


def apply_gradients(opt, grad_cap, state, dense_grads, row_grads, loss, active, min_active=1, item_update="auto",
                    branch=False, guard=True):
    """New values of every parameter and state key after one step (the compile step collects them).

    `item_update` chooses per item matrix between the row path and `matrix_update` (same numbers).
    Whether the step is applied chooses between the new and the old whole arrays: with `branch`
    by one conditional (no pass over the arrays; faster on a CPU), else by an elementwise select
    (a GPU would read a conditional's predicate back to the host at every step).

    `state`: key -> current value (parameters, optimiser states, "step", "ok"); `dense_grads`:
    name -> gradient; `row_grads`: name -> RowGrads. A step whose loss, gradient or any new value
    (weights, optimiser state, velocity: a huge learning rate overflows float32) is not finite
    changes nothing, and neither do the steps after it ("ok"); a step with fewer than
    `min_active` active rows (padding; a lone session without negatives) changes nothing either.

    Without `guard` the new values are not checked: every step with enough active rows is
    applied, and "ok" only tells whether every loss and gradient norm so far was finite. The
    caller then checks the values after the steps (`all_finite`) and, when one is not finite,
    runs the steps again with the guard from the values before them (gru4rec.py's training
    calls): a non-finite value stays non-finite under every later step when no optimiser
    constant multiplies a state by zero (`absorbs_non_finite`), so the check after the steps
    sees whatever a step made non-finite.
    """
    norm2 = grad_norm2(dense_grads, row_grads)
    scale = np.float32(1)
    if not is_zero(grad_cap):
        cap = f32(grad_cap)
        scale = pt.switch(norm2 >= cap * cap, cap / pt.sqrt(norm2), 1).astype(FLOATX)
    step = state["step"] + 1
    enough = pt.sum(active) >= min_active
    ok = state["ok"] & pt.isfinite(loss) & pt.isfinite(norm2)
    dense_values, finite = {}, []
    for name, grad in dense_grads.items():
        keys = opt.state_keys(name, sparse=False)
        dense_values[name] = dense_update(opt, name, state[name], grad * scale, {k: state[k] for k in keys}, step)
        finite += all_finite(dense_values[name].values()) if guard else []
    row_new, masked, written = {}, {}, {}
    for name, r in row_grads.items():
        row_state = {k: state[k] for k in opt.state_keys(name, sparse=True)}
        whole = isinstance(r, MatrixGrads)
        if whole or use_matrix_update(item_update, state[name].type.shape[0], r.idx.type.shape[0]):
            if guard:
                values, mask = matrix_update(opt, name, state[name], r.idx, r.grad * scale, r.touched, row_state,
                                             summed=whole)
                masked[name] = matrix_write(name, state[name], values, mask, row_state)
                finite += all_finite(masked[name].values())  # untouched rows hold their old, finite values
            else:  # whether the step applies is part of the touched rows' mask: one select per array
                written.update(matrix_update(opt, name, state[name], r.idx, r.grad * scale, r.touched, row_state,
                                             summed=whole, written=enough)[0])
            continue
        grad, share = coalesce(r.idx, r.grad * scale, r.touched)
        row_new[name] = (*row_values(opt, r.idx, r.rows, grad, row_state), share, row_state)
        finite += _rows_finite(row_new[name][1], share) if guard else []
    if finite:  # a padding step applies nothing: its values do not count
        ok = ok & (pt.all(pt.stack(finite)) | ~enough)
    apply = ok & enough if guard else enough
    new = {"ok": ok, "step": pt.switch(apply, step, state["step"]), **written}
    candidates = {k: v for values in [*dense_values.values(), *masked.values()] for k, v in values.items()}
    if candidates and branch and guard:
        keys = list(candidates)
        chosen = ifelse(apply, [candidates[k] for k in keys], [state[k] for k in keys])
        new.update(zip(keys, chosen if isinstance(chosen, (list, tuple)) else [chosen]))
    else:
        new.update({k: pt.switch(apply, v, state[k]) for k, v in candidates.items()})
    for name, r in row_grads.items():
        if name in masked or name in written:
            continue
        old, values, share, row_state = row_new[name]
        new.update(rows_update(name, state[name], r.idx, old, values, share, row_state, apply))
    return new


def absorbs_non_finite(consts):
    """Whether a non-finite value of a parameter or optimiser state stays non-finite at every later
    step of an optimiser with constants `consts` (`Optimizer.consts`), so that a check after many
    steps finds what any step made non-finite: each is updated as x' = c x + u with c != 0 (inf
    times c, inf plus anything and NaN with anything are not finite), which fails only when a
    decay constant is 0."""
    return all(value != 0 for key, value in consts.items() if key in ("decay", "beta1", "beta2"))
