"""The model's configuration: every constructor parameter checked once, frozen into a `Config`.

`make_config` is the one place where GRU4Rec's parameters are validated, before any slow work:
each value gets its type, range and finiteness checked, and a clear ValueError (TypeError for a
wrong type such as ``'False'``) names it. It also derives the values that the graph is built
from (the embedding mode and size, the optimiser constants, the resolved device). Activation
names are parsed here (`parse_activation`); `gru4rec.activation` turns them into functions.
"""
import numpy as np

from gru4rec_lib.backend import resolve_device
from gru4rec_lib.optim import ITEM_UPDATES, OPTIMIZER_DEFAULTS
from gru4rec_lib.sessiondata import is_int, is_real

LOSSES = {"cross-entropy": "softmax", "xe_logit": "softmax_logit", "bpr": None, "top1": None,
          "top1-max": None, "bpr-max": None}  # loss -> the final_act it requires (None: elementwise)
ACTIVATION_CONSTANTS = {"linear": 0, "relu": 0, "tanh": 0, "leaky": 1, "elu": 1, "selu": 2}


def parse_activation(name):
    """(base name, [constants]) of an elementwise activation name: 'elu-0.5' -> ('elu', [0.5]).

    ValueError for an unknown name, or constants that are missing, extra or not finite numbers.
    """
    parts = name.split("-")
    try:
        consts = [float(p) for p in parts[1:]]
    except ValueError:
        consts = None
    if consts is not None and not np.all(np.isfinite(consts)):
        consts = None  # 'elu-nan', 'leaky-inf': the constants must be finite numbers
    base = parts[0]
    if base not in ACTIVATION_CONSTANTS or consts is None or len(consts) != ACTIVATION_CONSTANTS[base]:
        raise ValueError(f"unknown activation {name!r}; use linear, relu, tanh, leaky-X, elu-X or "
                         "selu-X-Y with finite numbers X, Y (softmax and softmax_logit only as final_act)")
    return base, consts


class _FrozenDict(dict):
    """A dict that can sit in a frozen, hashable configuration (the optimiser constants)."""

    def __hash__(self):
        return hash(tuple(sorted(self.items())))

    def _readonly(self, *args, **kwargs):
        raise TypeError("the configuration is frozen")

    __setitem__ = __delitem__ = update = pop = clear = setdefault = _readonly


def _check(condition, name, value, expected, error=ValueError):
    if not condition:
        raise error(f"{name}={value!r} is invalid: expected {expected}")


def _is_finite(value):
    return is_real(value) and bool(np.isfinite(value))


BOOL_PARAMS = ("constrained_embedding", "init_as_normal", "train_random_order", "time_sort", "show_progress",
               "reset_between_sessions")


def _check_activation(name, value, final=False):
    if final and value in ("softmax", "softmax_logit"):
        return
    if not isinstance(value, str):
        raise TypeError(f"{name}={value!r} is invalid: expected an activation name (str), e.g. 'tanh'")
    try:
        parse_activation(value)
    except ValueError as err:
        raise ValueError(f"{name}={value!r} is invalid: {err}") from None


def _check_loss(p):
    """Loss, activations and smoothing; a final_act of None becomes the loss's own (in `p`)."""
    _check(p["loss"] in LOSSES, "loss", p["loss"], f"one of {list(LOSSES)}")
    required = LOSSES[p["loss"]]
    if p["final_act"] is None:
        p["final_act"] = required or "linear"
    if required is not None or p["final_act"] in ("softmax", "softmax_logit"):
        _check(p["final_act"] == required, "final_act", p["final_act"],
               f"{required!r} with loss={p['loss']!r}" if required else
               f"an elementwise activation with loss={p['loss']!r} (softmax goes with cross-entropy)")
    _check_activation("final_act", p["final_act"], final=True)
    _check_activation("hidden_act", p["hidden_act"])
    _check(not p["smoothing"] or p["loss"] in ("cross-entropy", "xe_logit"), "smoothing", p["smoothing"],
           "0 unless loss is cross-entropy or xe_logit")


def _check_numbers(p):
    """Counts, probabilities and rates: the right type, finite, in range (NaN fails every range)."""
    for name in BOOL_PARAMS:
        _check(isinstance(p[name], (bool, np.bool_)), name, p[name], "True or False (a bool, not a string)",
               TypeError)
    _check(is_int(p["batch_size"]) and p["batch_size"] >= 1, "batch_size", p["batch_size"], "a positive int")
    _check(p["steps_per_call"] is None or (is_int(p["steps_per_call"]) and p["steps_per_call"] >= 1),
           "steps_per_call", p["steps_per_call"], "a positive int or None")
    _check(p["item_update"] in ITEM_UPDATES, "item_update", p["item_update"], f"one of {ITEM_UPDATES}")
    _check(is_int(p["n_epochs"]) and p["n_epochs"] >= 0, "n_epochs", p["n_epochs"], "an int >= 0")
    for name in ("n_sample", "sample_store"):
        _check(is_int(p[name]) and p[name] >= 0, name, p[name], "an int >= 0")
    _check(is_int(p["max_live_sessions"]) and p["max_live_sessions"] >= 1, "max_live_sessions",
           p["max_live_sessions"], "a positive int")
    for name in ("dropout_p_embed", "dropout_p_hidden", "momentum", "smoothing"):
        _check(_is_finite(p[name]) and 0 <= p[name] < 1, name, p[name], "a number in [0, 1)")
    for name in ("logq", "sample_alpha"):
        _check(_is_finite(p[name]) and 0 <= p[name] <= 1, name, p[name], "a number in [0, 1]")
    _check(_is_finite(p["learning_rate"]) and p["learning_rate"] > 0, "learning_rate", p["learning_rate"],
           "a finite number > 0")
    for name in ("lmbd", "bpreg", "sigma", "grad_cap"):
        _check(_is_finite(p[name]) and p[name] >= 0, name, p[name], "a finite number >= 0")
    _check(p["seed"] is None or is_int(p["seed"]), "seed", p["seed"], "an int or None")
    _check(is_int(p["bptt"]) and p["bptt"] >= 1, "bptt", p["bptt"], "a positive int (1: no BPTT)")


def _check_columns(p):
    for name in ("item_key", "time_key"):
        _check(isinstance(p[name], str), name, p[name], "a column name (str)")
    _check(p["user_key"] is None or isinstance(p["user_key"], str), "user_key", p["user_key"],
           "None (sessions) or the user column's name (str)")
    _check(not p["reset_between_sessions"] or p["user_key"] is not None, "reset_between_sessions",
           p["reset_between_sessions"], "False unless user_key is set (sessions always start from zero)")
    needs_session = p["user_key"] is None or p["reset_between_sessions"]
    _check(isinstance(p["session_key"], str) or (p["session_key"] is None and not needs_session),
           "session_key", p["session_key"], "a column name (str)")


def _optimizer_consts(p):
    _check(p["adapt"] in OPTIMIZER_DEFAULTS, "adapt", p["adapt"], f"one of {list(OPTIMIZER_DEFAULTS)}")
    consts = dict(OPTIMIZER_DEFAULTS[p["adapt"]])
    extra = p["adapt_params"] or {}
    _check(isinstance(extra, dict) and set(extra) <= set(consts), "adapt_params", extra,
           f"a dict with keys among {sorted(consts)} for adapt={p['adapt']!r}")
    _check(all(_is_finite(v) for v in extra.values()), "adapt_params", extra, "finite numbers as values")
    for key, value in extra.items():  # outside these ranges a fit fails at its first step, or never converges
        _check(value > 0 if key == "epsilon" else 0 <= value < 1, "adapt_params", extra,
               f"{key} {'> 0' if key == 'epsilon' else 'in [0, 1)'}")
    consts.update({k: float(v) for k, v in extra.items()})
    return _FrozenDict(consts)


def _embedding_mode(p, layers):
    emb = p["embedding"]
    _check(emb == "layersize" or (is_int(emb) and emb >= 0), "embedding", emb, "an int >= 0 or 'layersize'")
    if p["constrained_embedding"]:
        return "shared", layers[-1]
    if emb:
        return "separate", layers[0] if emb == "layersize" else int(emb)
    return "none", 0


def make_config(params, config_type):
    """Validate constructor parameters (a dict, as `get_params` gives) and return them frozen.

    `config_type` is the frozen dataclass to fill (`gru4rec.Config`: every constructor parameter
    plus the derived values).

    The one place where parameters are checked: every value gets its type, range and finiteness
    checked, and a clear ValueError (TypeError for a wrong type such as ``'False'``) names it.
    Derived values are added: the embedding ``mode`` and ``emb_size``, the optimiser constants
    ``adapt_consts``, the resolved ``device`` and ``steps_per_call``.
    """
    p = dict(params)
    _check_loss(p)
    layers = (p["layers"],) if is_int(p["layers"]) else p["layers"]
    _check(isinstance(layers, (tuple, list)) and len(layers) > 0 and all(is_int(h) and h > 0 for h in layers),
           "layers", p["layers"], "a non-empty tuple of positive ints, e.g. (100,)")
    _check_numbers(p)
    _check_columns(p)
    consts = _optimizer_consts(p)
    layers = tuple(int(h) for h in layers)
    mode, emb_size = _embedding_mode(p, layers)
    device = resolve_device(p["device"])
    steps = p["steps_per_call"] or (16 if device.platform == "cpu" else 64)
    adapt_params = _FrozenDict(p["adapt_params"]) if p["adapt_params"] else None
    p.update(layers=layers, adapt_params=adapt_params, device=device, steps_per_call=steps)
    return config_type(**p, mode=mode, emb_size=emb_size, adapt_consts=consts)
