"""Plain-numpy re-statements of the published model and of the authors' training step, for the tests.

Nothing here imports gru4rec: the tests compare the compiled graph against these functions, and
gradients against central finite differences of them. Everything is float64, row by row where
that reads closer to the formulas than a vectorised form would.
"""
import numpy as np


# ---------------------------------------------------------------- activations 
def activation(name, x):
    """linear, relu, tanh, leaky-X, elu-X, selu-X-Y, elementwise."""
    base, *consts = name.split("-")
    consts = [float(c) for c in consts]
    if base == "linear":
        return x
    if base == "relu":
        return np.maximum(x, 0)
    if base == "tanh":
        return np.tanh(x)
    if base == "leaky":
        return np.where(x >= 0, x, consts[0] * x)
    if base == "elu":
        return np.where(x >= 0, x, consts[0] * (np.exp(np.minimum(x, 0)) - 1))
    if base == "selu":
        return consts[0] * np.where(x >= 0, x, consts[1] * (np.exp(np.minimum(x, 0)) - 1))
    raise ValueError(name)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


# ---------------------------------------------------------------- losses 
def loss_row(loss, row, pos, valid, smoothing=0.0, bpreg=1.0):
    """Loss of one score row; `pos` is the positive column, `valid` the columns that exist."""
    cols = np.flatnonzero(valid)
    negs = cols[cols != pos]
    r_pos = row[pos]
    if loss in ("cross-entropy", "xe_logit"):
        if loss == "cross-entropy":
            p = softmax(row[cols])
            nll = -np.log(p + 1e-24)
        else:
            shifted = row[cols] - row[cols].max()
            nll = np.log(np.exp(shifted).sum()) - shifted
        nll_pos = nll[list(cols).index(pos)]
        if not smoothing:
            return nll_pos
        n = len(cols)
        return (1 - smoothing * n / (n - 1)) * nll_pos + smoothing / (n - 1) * nll.sum()
    if loss == "bpr":  # the mean runs over every column, the positive's own included (reference)
        return np.mean(-np.log(sigmoid(r_pos - row[cols])))
    if loss == "top1":  # the authors' code takes the positive's own sigmoid(r_ii^2)/n back out
        return np.mean(sigmoid(row[cols] - r_pos) + sigmoid(row[cols] ** 2)) - sigmoid(r_pos ** 2) / len(cols)
    if len(negs) == 0:
        return 0.0
    r_neg = row[negs]
    s = softmax(r_neg)
    if loss == "top1-max":
        return np.sum(s * (sigmoid(r_neg - r_pos) + sigmoid(r_neg ** 2)))
    if loss == "bpr-max":
        return -np.log(np.sum(s * sigmoid(r_pos - r_neg)) + 1e-24) + bpreg * np.sum(s * r_neg ** 2)
    raise ValueError(loss)


def loss_rows(loss, scores, pos_cols, valid, smoothing=0.0, bpreg=1.0):
    return np.array([loss_row(loss, scores[i], pos_cols[i], valid[i], smoothing, bpreg)
                     for i in range(len(scores))])


# ---------------------------------------------------------------- GRU 
def gru_step(x_proj, h, Wh, hidden_act="tanh"):
    """x_proj = x Wx + b with column blocks [r | z | h~]; Wh has the same blocks."""
    n = h.shape[1]
    Wr, Wz, Wc = Wh[:, :n], Wh[:, n:2 * n], Wh[:, 2 * n:]
    r = sigmoid(x_proj[:, :n] + h @ Wr)
    z = sigmoid(x_proj[:, n:2 * n] + h @ Wz)
    candidate = activation(hidden_act, x_proj[:, 2 * n:] + (r * h) @ Wc)
    return (1 - z) * h + z * candidate


def forward(params, mode, n_layers, items, hidden, hidden_act="tanh"):
    """New hidden states of all layers after feeding `items` (no dropout)."""
    if mode == "none":
        x_proj = params["Wx_0"][items] + params["Bh_0"]
    else:
        x = params["E"][items] if mode == "separate" else params["Wy"][items]
        x_proj = x @ params["Wx_0"] + params["Bh_0"]
    new = []
    for layer in range(n_layers):
        if layer:
            x_proj = new[-1] @ params[f"Wx_{layer}"] + params[f"Bh_{layer}"]
        new.append(gru_step(x_proj, hidden[layer], params[f"Wh_{layer}"], hidden_act))
    return new


def step_loss(params, cfg, inputs, targets, negatives, hidden, log_support, batch_size):
    """Loss of one step (sum over the active rows / batch_size) and the new hidden states.

    `inputs`, `targets` and `hidden` hold the active slots only; their targets and the
    `negatives` are the score columns (an inactive slot's column does not exist).
    """
    new = forward(params, cfg["mode"], cfg["n_layers"], inputs, hidden, cfg.get("hidden_act", "tanh"))
    return output_loss(params, cfg, new[-1], targets, negatives, log_support, batch_size), new


def window_forward(params, cfg, window, start):
    """Truncated BPTT's forward: from the states `start`, feed the window's steps oldest first.

    `window` is a list of (items, reset) per step; reset zeroes a slot's state before its item.
    Returns (states after the last step, states after the first step).
    """
    hidden, first = start, None
    for items, reset in window:
        hidden = [np.where(np.asarray(reset)[:, None], 0.0, h) for h in hidden]
        hidden = forward(params, cfg["mode"], cfg["n_layers"], items, hidden, cfg.get("hidden_act", "tanh"))
        first = hidden if first is None else first
    return hidden, first


def output_loss(params, cfg, hidden_last, targets, negatives, log_support, batch_size):
    """The loss of the scores of `hidden_last` against targets + negatives."""
    cols = np.concatenate([targets, negatives]).astype(int)
    scores = hidden_last @ params["Wy"][cols].T + params["By"][cols]
    if cfg.get("logq"):
        log_q = np.concatenate([log_support[targets], cfg["sample_alpha"] * log_support[negatives]])
        scores = scores - cfg["logq"] * log_q
    if cfg["loss"] not in ("cross-entropy", "xe_logit"):
        scores = activation(cfg["final_act"], scores)
    valid = np.ones(scores.shape, bool)
    rows = loss_rows(cfg["loss"], scores, np.arange(len(targets)), valid, cfg.get("smoothing", 0.0),
                     cfg.get("bpreg", 1.0))
    return rows.sum() / batch_size


def numeric_grad(f, params, eps=1e-6):
    """Central finite differences of the scalar f(params) for every entry of every array."""
    grads = {}
    for name, value in params.items():
        g = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            old = value[i]
            value[i] = old + eps
            up = f(params)
            value[i] = old - eps
            down = f(params)
            value[i] = old
            g[i] = (up - down) / (2 * eps)
        grads[name] = g
    return grads


# ---------------------------------------------------------------- optimisation 
def train_step(params, opt, cfg, inputs, targets, negatives, hidden, log_support, batch_size):
    """One training step in place on `params` / `opt`; returns the new hidden states.

    Item matrices change only on the rows touched by the step (and only those rows get the L2
    term); a row used several times gets one optimiser step on the sum of its gradients. With
    grad_cap, the norm runs over the gradient of every occurrence of a row (`occurrence_norm2`).
    """
    def loss_of(p):
        return step_loss(p, cfg, inputs, targets, negatives, hidden, log_support, batch_size)[0]

    _, new_hidden = step_loss(params, cfg, inputs, targets, negatives, hidden, log_support, batch_size)
    norm2 = occurrence_norm2(params, cfg, inputs, targets, negatives, hidden, log_support, batch_size) \
        if cfg.get("grad_cap") else None
    optimizer_step(params, opt, cfg, loss_of, inputs, np.concatenate([targets, negatives]), norm2)
    return new_hidden


def train_step_bptt(params, opt, cfg, window, touched_inputs, start, targets, negatives, log_support,
                    batch_size):
    """One step with truncated BPTT (see `window_forward`); returns the states after the window's
    first step, computed before the update (the next step's `start`). `touched_inputs` are the
    window's item rows that the loss reaches (real steps with no reset after them)."""
    def loss_of(p):
        return output_loss(p, cfg, window_forward(p, cfg, window, start)[0][-1], targets, negatives,
                           log_support, batch_size)

    _, next_start = window_forward(params, cfg, window, start)
    optimizer_step(params, opt, cfg, loss_of, touched_inputs, np.concatenate([targets, negatives]))
    return next_start


def occurrence_norm2(params, cfg, inputs, targets, negatives, hidden, log_support, batch_size):
    """Squared gradient norm with one row per occurrence (the authors' grad_cap norm, before L2).

    Every occurrence of an item row gets its own copy of the row, so that finite differences see
    each occurrence's gradient apart.
    """
    inputs, out = np.asarray(inputs, int), np.concatenate([targets, negatives]).astype(int)
    n_in, n_out = len(inputs), len(out)
    expanded = {k: v.copy() for k, v in params.items()}
    in_name = {"none": "Wx_0", "separate": "E", "shared": "Wy"}[cfg["mode"]]
    if cfg["mode"] == "shared":
        expanded["Wy"] = np.concatenate([params["Wy"][inputs], params["Wy"][out]])
        expanded["By"] = np.concatenate([np.zeros(n_in), params["By"][out]])
        support = np.concatenate([np.zeros(n_in), log_support[out]])
        new_in, new_out = np.arange(n_in), n_in + np.arange(n_out)
    else:
        expanded[in_name] = params[in_name][inputs]
        expanded["Wy"], expanded["By"] = params["Wy"][out], params["By"][out]
        support = log_support[out]
        new_in, new_out = np.arange(n_in), np.arange(n_out)
    n_t = len(targets)

    def loss_of(p):
        return step_loss(p, cfg, new_in, new_out[:n_t], new_out[n_t:], hidden, support, batch_size)[0]

    return sum(np.sum(g ** 2) for g in numeric_grad(loss_of, expanded).values())


DEFAULTS = {"adagrad": dict(epsilon=1e-6), "rmsprop": dict(decay=0.9, epsilon=1e-6),
            "adadelta": dict(decay=0.95, epsilon=1e-6), "adam": dict(beta1=0.9, beta2=0.999, epsilon=1e-6)}


def optimizer_step(params, opt, cfg, loss_of, input_rows, out_rows, norm2=None):
    """The authors' update on finite-difference gradients of `loss_of`, in place on `params` / `opt`.

    grad_cap scales every gradient by cap/norm when norm >= cap (norm from `norm2`, else over the
    summed gradients); then per parameter: the optimiser's direction d on the touched rows,
    step = -lr (d + lmbd p), momentum vel = mu vel + step, p += step (or vel). adadelta: lr = 1.
    Adam counts steps per item row on item matrices, globally on dense parameters.
    """
    grads = numeric_grad(loss_of, params)
    out_rows = np.asarray(out_rows).astype(int)
    touched = {"Wy": out_rows, "By": out_rows}
    input_name = {"none": "Wx_0", "separate": "E", "shared": "Wy"}[cfg["mode"]]
    touched[input_name] = np.union1d(touched.get(input_name, []), input_rows).astype(int)
    if cfg.get("grad_cap"):
        norm = np.sqrt(norm2 if norm2 is not None else sum(np.sum(g ** 2) for g in grads.values()))
        cfg.setdefault("capped", []).append(norm >= cfg["grad_cap"])
        if norm >= cfg["grad_cap"]:
            grads = {n: g * cfg["grad_cap"] / norm for n, g in grads.items()}
    opt["step"] = opt.get("step", 0) + 1
    adapt = cfg.get("adapt", "adagrad")
    c = {**DEFAULTS.get(adapt, {}), **(cfg.get("adapt_params") or {})}
    lr = 1.0 if adapt == "adadelta" else cfg["learning_rate"]
    for name, value in params.items():
        rows = np.zeros(value.shape[0], bool)
        rows[touched[name] if name in touched else slice(None)] = True
        g, p = grads[name][rows], value[rows]
        if adapt == "adam":
            if name in touched:
                opt[f"count/{name}"][rows] += 1
                t = expand_rows(opt[f"count/{name}"][rows], g)
            else:
                t = opt["step"]
        d = direction(adapt, c, g, opt, name, rows, t if adapt == "adam" else None)
        step = -lr * (d + cfg.get("lmbd", 0.0) * p)
        if cfg.get("momentum"):
            velocity = cfg["momentum"] * opt[f"velocity/{name}"][rows] + step
            opt[f"velocity/{name}"][rows] = velocity
            step = velocity
        value[rows] = p + step


def direction(adapt, c, g, opt, name, rows, t):
    """The optimiser's scaled gradient on the rows; updates its accumulators in `opt`."""
    if adapt is None:
        return g
    if adapt in ("adagrad", "rmsprop", "adadelta"):
        old = opt[f"acc/{name}"][rows]
        acc = old + g ** 2 if adapt == "adagrad" else c["decay"] * old + (1 - c["decay"]) * g ** 2
        opt[f"acc/{name}"][rows] = acc
        if adapt != "adadelta":
            return g / np.sqrt(acc + c["epsilon"])
        delta = opt[f"acc_delta/{name}"][rows]
        d = g * np.sqrt((delta + c["epsilon"]) / (acc + c["epsilon"]))
        opt[f"acc_delta/{name}"][rows] = c["decay"] * delta + (1 - c["decay"]) * d ** 2
        return d
    m = c["beta1"] * opt[f"m/{name}"][rows] + (1 - c["beta1"]) * g
    v = c["beta2"] * opt[f"v/{name}"][rows] + (1 - c["beta2"]) * g ** 2
    opt[f"m/{name}"][rows], opt[f"v/{name}"][rows] = m, v
    return (m / (1 - c["beta1"] ** t)) / (np.sqrt(v / (1 - c["beta2"] ** t)) + c["epsilon"])


def expand_rows(per_row, like):
    return per_row.reshape((-1,) + (1,) * (like.ndim - 1))
