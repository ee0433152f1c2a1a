"""Next-item evaluation: Recall@N and MRR@N (SPEC §7), session-parallel, on the compute device.

Each test session starts from a zero hidden state; a session of length L gives L-1 points (input
item t, target t+1); test events whose item the model does not know are dropped first. A model
fitted with ``user_key`` is evaluated on user sequences; given the users' ``history``, each test
sequence continues from the state the model reached on that history (issue 8). The
target is ranked against every item of the model (or a candidate subset) with one of three tie
modes. GRU4Rec models are scored by a compiled K-step ``scan`` that returns only the per-call
sums (and, on request, the ranks); other models (`baselines`) are scored on the host through
their ``score_step`` method and ranked by the same formula.
"""
import logging
import time

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
from tqdm.auto import tqdm

from gru4rec_lib import backend
import gru4rec
from gru4rec_lib import sessiondata

logger = logging.getLogger(__name__)
MODES = ("standard", "conservative", "median")


def target_ranks(scores, target_scores, target_in_scores, mode, xp=np):
    """Rank of each row's target among the scored items (SPEC §7), for numpy (xp=np) or PyTensor (xp=pt).

    standard: 1 + #{s_j > s_t}; conservative: 1 + #{s_j >= s_t, j != t};
    median: 1 + #{s_j > s_t} + #{s_j = s_t, j != t} / 2.
    `target_in_scores` (B,) says whether the target's own column is among `scores` (B, C): its
    own tie is then not counted.
    """
    greater = xp.sum(scores > target_scores[:, None], axis=1)
    if mode == "standard":
        return 1.0 + greater
    equal = np.equal if xp is np else pt.eq  # `==` on PyTensor variables compares identity
    ties = xp.sum(equal(scores, target_scores[:, None]), axis=1) - target_in_scores
    return 1.0 + greater + (ties if mode == "conservative" else ties / 2.0)


def evaluate(model, test_data, cutoffs=(1, 5, 10, 20), mode="standard", items=None, batch_size=512,
             steps_per_call=32, return_ranks=False, show_progress=False, history=None, allow_pickle=False):
    """Recall@N and MRR@N of next-item prediction on `test_data`, all cut-offs in one pass.

    Parameters
    ----------
    model : GRU4Rec or a baseline
        A fitted model; its session/item/time keys name the test data's columns.
    test_data : DataFrame or path
    cutoffs : sequence of int, default (1, 5, 10, 20)
    mode : {'standard', 'conservative', 'median'}, default 'standard'
        How ties with the target's score count (see `target_ranks`).
    items : array-like or None
        Rank only among these item ids (the target counts whether or not it is among them);
        None: all items of the model.
    batch_size : int, default 512
        Parallel session slots; any number of test sessions works, fewer than this included.
    steps_per_call : int, default 32
        Steps per compiled call (a speed knob).
    return_ranks : bool, default False
        Also return the rank of every evaluation point, in schedule order, with its session id
        and position.
    history : DataFrame or path or None
        Only for a GRU4Rec model fitted with ``user_key``: events of the same users before the
        test (normally the training data). Each user's test sequence then starts from the hidden
        state after feeding the user's history (in time order, unknown items skipped), and the
        user's first test event is predicted too, from the last history event (a point with
        position -1 in the ranks). Users without history start from zero as usual.
    allow_pickle : bool, default False
        Read ``.pkl``/``.pickle`` paths (test data and history); a pickle runs code when read.

    Returns
    -------
    dict with 'recall' and 'mrr' ({N: value}), 'n_points', 'n_dropped' (test events with unknown
    items), 'seconds', and with return_ranks a DataFrame 'ranks' (SessionId, position, rank).
    A model whose scores are not finite (NaN or inf) raises ValueError instead: NaN scores would
    rank every target first.

    Examples
    --------
    >>> from gru4rec_lib import synthetic
    >>> train, test = synthetic.split_by_time(synthetic.generate_sessions(n_sessions=400, n_items=30, seed=0))
    >>> model = gru4rec.GRU4Rec(layers=(16,), n_epochs=1, n_sample=8, show_progress=False).fit(train)
    >>> result = evaluate(model, test, cutoffs=(5, 20))
    >>> sorted(result['recall'])
    [5, 20]
    """
    cutoffs = _check_args(model, cutoffs, mode, batch_size, steps_per_call)
    started = time.perf_counter()
    item_map = getattr(model, "item_map_", None) or sessiondata.ItemMap(model.item_ids_)
    user_key = getattr(model, "user_key", None)
    if history is not None and (user_key is None or not isinstance(model, gru4rec.GRU4Rec)):
        raise ValueError("history continues users' hidden states: it needs a GRU4Rec model fitted with user_key")
    reader = sessiondata.SequenceReader(model.session_key, model.item_key, model.time_key, user_key,
                                        getattr(model, "reset_between_sessions", False))
    events = reader.load(test_data, allow_pickle=allow_pickle)

    def group(frame, keep_rows=False):
        return reader.group(frame, item_map, drop_unknown=True, keep_rows=keep_rows)
    test = group(events)
    if test.n_dropped:
        logger.warning("dropped %d test events whose items the model does not know", test.n_dropped)
    init = None
    if history is not None:
        past = reader.load(history, allow_pickle=allow_pickle)
        test, init = _continued(model, group, test, events, past, batch_size, steps_per_call)
    if test.n_steps == 0:
        unit = "user" if user_key else "session"
        raise ValueError(f"the test data has no {unit} with 2 or more known items: nothing to evaluate")
    cand_idx = _candidates(item_map, items)
    scorer = (_DeviceScorer if isinstance(model, gru4rec.GRU4Rec) else _HostScorer)(
        model, batch_size, steps_per_call, cutoffs, mode, cand_idx, return_ranks, init)
    order = np.arange(test.n_sessions)
    chunks = sessiondata.session_parallel_schedule(test, order, batch_size, steps_per_call)
    total = sessiondata.n_chunks(test, order, batch_size, steps_per_call)
    pending, ranks = [], []  # device results are read once at the end: no sync per call
    for chunk in tqdm(chunks, total=total, disable=not show_progress, desc="evaluate", unit="call"):
        chunk_sums, chunk_ranks = scorer(chunk)
        pending.append(chunk_sums)
        if return_ranks:
            ranks.append((chunk, chunk_ranks))
    n = test.n_steps
    sums = np.sum([np.asarray(p, dtype=float) for p in pending], axis=0)
    if sums[-1]:  # NaN scores would rank every target first: refuse them rather than report them
        raise ValueError(f"the model's scores are not finite (NaN or inf) at {int(sums[-1])} of {n} evaluation "
                         "points: its weights are damaged or overflow float32; no metric is reported")
    result = {"recall": {c: float(sums[i] / n) for i, c in enumerate(cutoffs)},
              "mrr": {c: float(sums[len(cutoffs) + i] / n) for i, c in enumerate(cutoffs)},
              "n_points": n, "n_dropped": test.n_dropped, "seconds": time.perf_counter() - started}
    if return_ranks:
        result["ranks"] = _rank_frame(test, ranks, user_key or model.session_key, init)
    return result


evaluate_gpu = evaluate  # the reference's name


def _check_args(model, cutoffs, mode, batch_size, steps_per_call):
    if not hasattr(model, "item_ids_"):
        raise gru4rec.NotFittedError(f"this {type(model).__name__} instance is not fitted yet: call fit first")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is invalid: expected one of {MODES}")
    cutoffs = [cutoffs] if np.isscalar(cutoffs) else list(cutoffs)
    if not cutoffs or not all(gru4rec._is_int(c) and c >= 1 for c in cutoffs):
        raise ValueError(f"cutoffs={cutoffs!r} is invalid: expected positive ints, e.g. (1, 5, 10, 20)")
    for name, value in (("batch_size", batch_size), ("steps_per_call", steps_per_call)):
        if not gru4rec._is_int(value) or value < 1:
            raise ValueError(f"{name}={value!r} is invalid: expected a positive int")
    return [int(c) for c in cutoffs]


def _candidates(item_map, items):
    """Candidate item indices (None: all items); unknown candidate ids raise ValueError."""
    if items is None:
        return None
    ids = np.asarray(items)
    if ids.size == 0:
        raise ValueError("items is empty: pass candidate item ids, or None for all items")
    idx = item_map.indices(ids)
    if (idx < 0).any():
        raise ValueError(f"{int((idx < 0).sum())} candidate items are unknown to the model, "
                         f"e.g. {list(ids[idx < 0][:5])}")
    return np.unique(idx).astype(np.int32)


def _rank_frame(test, ranks, session_key, init=None):
    active = np.concatenate([c.active.ravel() for c, _ in ranks])
    session = np.concatenate([c.session.ravel() for c, _ in ranks])[active]
    position = np.concatenate([c.position.ravel() for c, _ in ranks])[active]
    if init is not None:  # continued sequences begin with the last history event: position -1
        position = position - init.continued[session]
    values = np.concatenate([np.asarray(r).ravel() for _, r in ranks])[active]
    return pd.DataFrame({session_key: test.session_ids[session], "position": position, "rank": values})


def _metric_sums(ranks, active, cutoffs, xp=np):
    """[hits@N for N in cutoffs] + [sum of 1/rank where rank <= N], over the active points."""
    hits = [(ranks <= c) & active for c in cutoffs]
    recall = [xp.sum(h) for h in hits]
    mrr = [xp.sum(xp.switch(h, 1.0 / ranks, 0.0)) if xp is pt else
           np.divide(1.0, ranks, out=np.zeros(np.shape(ranks)), where=h).sum() for h in hits]
    return recall + mrr


class _HostScorer:
    """Any model with ``score_step(reset, input_idx, active) -> (B, n_items)`` scores; ranked in numpy."""

    def __init__(self, model, batch_size, steps_per_call, cutoffs, mode, cand_idx, return_ranks, init=None):
        self.model, self.cutoffs, self.mode, self.cand_idx = model, cutoffs, mode, cand_idx
        model.reset_state()

    def __call__(self, chunk):
        ranks, not_finite = np.zeros(chunk.active.shape), 0
        for k in range(len(chunk.active)):
            if not chunk.active[k].any():
                continue
            scores = np.asarray(self.model.score_step(chunk.reset[k], chunk.inputs[k], chunk.active[k]))
            rows = np.arange(len(scores))
            not_finite += int((chunk.active[k] & ~np.isfinite(scores).all(axis=1)).sum())
            target = scores[rows, chunk.targets[k]]
            in_scores = np.ones(len(scores))
            if self.cand_idx is not None:
                in_scores = np.isin(chunk.targets[k], self.cand_idx).astype(float)
                scores = scores[:, self.cand_idx]
            ranks[k] = np.where(chunk.active[k], target_ranks(scores, target, in_scores, self.mode), 0)
        sums = _metric_sums(ranks, chunk.active, self.cutoffs) + [not_finite]
        return np.array(sums, dtype=float), ranks


class _DeviceScorer:
    """GRU4Rec: one compiled call runs K steps and returns the metric sums (and the ranks)."""

    def __init__(self, model, batch_size, steps_per_call, cutoffs, mode, cand_idx, return_ranks, init=None):
        model._check_fitted()
        key = ("evaluate", batch_size, steps_per_call, tuple(cutoffs), mode, cand_idx is None, return_ranks,
               init is not None)
        if key not in model._fns:
            model._fns[key] = _compile_rank_fn(model, batch_size, steps_per_call, cutoffs, mode,
                                               cand_idx is not None, return_ranks, init is not None)
        self.fn, hidden = model._fns[key]
        for var in hidden:  # every evaluation starts from zero states (and resets per session anyway)
            backend.set_on_device(var, np.zeros(var.type.shape, backend.FLOATX), model._cfg.device)
        n_items = model.n_items_
        self.cand = [] if cand_idx is None else [cand_idx, _positions(cand_idx, n_items)]
        self.return_ranks, self.init = return_ranks, init

    def __call__(self, chunk):
        extra = self.init.step_inputs(chunk) if self.init is not None else []
        out = self.fn(chunk.inputs, chunk.targets, chunk.reset, chunk.active, *extra, *self.cand)
        return out[0], (out[1] if self.return_ranks else None)  # device arrays: read later


def _positions(cand_idx, n_items):
    """(n_items,) int32: position of each item among the candidates, -1 if absent."""
    pos = np.full(n_items, -1, dtype=np.int32)
    pos[cand_idx] = np.arange(len(cand_idx), dtype=np.int32)
    return pos


@backend.float32_graph
def _compile_rank_fn(model, batch_size, steps, cutoffs, mode, subset, return_ranks, continued=False):
    """Compile K evaluation steps: feed the inputs, score candidates, rank targets, sum the metrics.

    continued: two more step inputs, `start` (K, B) and the start states (K, B, h) per layer: a
    slot whose step has `start` takes the given state instead of zero.
    """
    cfg = model._cfg
    hidden = [backend.shared_on_device(np.zeros((batch_size, h), backend.FLOATX), f"eval_hidden_{i}", cfg.device)
              for i, h in enumerate(cfg.layers)]
    seqs = backend.schedule_inputs(steps, batch_size)
    if continued:
        seqs += [pt.tensor("start", shape=(steps, batch_size), dtype="bool")] + [
            pt.tensor(f"start_state_{i}", shape=(steps, batch_size, h), dtype=backend.FLOATX)
            for i, h in enumerate(cfg.layers)]
    cand = [pt.ivector("cand_idx"), pt.ivector("cand_pos")] if subset else []
    n_layers = len(hidden)

    def step(item_idx, target_idx, reset, active, *args):
        if continued:
            start, init, args = args[0], args[1:1 + n_layers], args[1 + n_layers:]
            states = [pt.switch(start[:, None], s0, s) for s0, s in zip(init, args[:n_layers])]
            reset = reset & ~start
            args = (*states, *args[n_layers:])
        states, cand_args = args[: len(hidden)], args[len(hidden):]
        new_states = model._step_graph(item_idx, reset, list(states))
        ranks, finite = _graph_ranks(model, new_states[-1], target_idx, mode, *cand_args)
        return [*new_states, pt.switch(active, ranks, 0).astype(backend.FLOATX), active & ~finite]

    outputs = pytensor.scan(step, sequences=seqs, outputs_info=[*hidden, None, None], non_sequences=cand,
                            n_steps=steps, return_updates=False)
    ranks, not_finite = outputs[-2], outputs[-1]  # (K, B) each
    # the count of points with a non-finite score rides along with the sums: no extra sync
    sums = pt.stack(_metric_sums(ranks, seqs[3], cutoffs, xp=pt) + [pt.sum(not_finite)]).astype(backend.FLOATX)
    updates = {var: out[-1] for var, out in zip(hidden, outputs[:-2])}
    fn = backend.compile_fn(seqs + cand, [sums, ranks] if return_ranks else [sums], updates)
    return fn, hidden


def _graph_ranks(model, hidden_last, target_idx, mode, cand_idx=None, cand_pos=None):
    """Ranks (B,) of the targets and whether each row's scores are all finite (B,) bool; scores are
    ranked as final_act gives them (logits for softmax)."""
    weights = model._weights()
    act = model._rank_activation()
    rows = pt.arange(target_idx.shape[0], dtype="int32")
    if cand_idx is None:
        scores = act(hidden_last @ weights["Wy"].T + weights["By"])  # (B, n_items)
        return target_ranks(scores, scores[rows, target_idx], 1, mode, xp=pt), pt.all(pt.isfinite(scores), axis=1)
    scores = act(hidden_last @ weights["Wy"][cand_idx].T + weights["By"][cand_idx])  # (B, n_cand)
    own = act(pt.sum(hidden_last * weights["Wy"][target_idx], axis=1) + weights["By"][target_idx])
    pos = cand_pos[target_idx]
    in_scores = pos >= 0
    target = pt.switch(in_scores, scores[rows, pt.maximum(pos, 0)], own)  # the column itself where scored
    finite = pt.all(pt.isfinite(scores), axis=1) & pt.isfinite(target)
    return target_ranks(scores, target, in_scores, mode, xp=pt), finite


# ---------------------------------------------------------------- user histories (issue 8)
class _StartStates:
    """Per test sequence: does it continue a history (`continued`, 0/1), and the states it starts from."""

    def __init__(self, continued, states):
        self.continued, self.states = continued, states  # (n_seq,) int; per layer (n_seq, h)

    def step_inputs(self, chunk):
        """`start` (K, B) and the start states (K, B, h) per layer for one chunk."""
        session = np.maximum(chunk.session, 0)
        start = chunk.active & (chunk.position == 0) & (self.continued[session] == 1)
        return [start] + [np.where(start[..., None], s[session], 0).astype(backend.FLOATX) for s in self.states]


def _continued(model, group, test, test_events, history_events, batch_size, steps):
    """Prepend each test user's last history event to their test sequence; the states before it.

    Returns the new test SessionData and a `_StartStates`. The break flags (reset_between_sessions)
    are recomputed on the joined events, so a session running from the history into the test
    keeps its state.
    """
    seq_key, time_key = model.user_key, model.time_key
    past_events = history_events[history_events[seq_key].isin(test.session_ids)]
    past = group(past_events, keep_rows=True)
    before = _states_before_last(model, past, batch_size, steps)
    tail = past_events.iloc[past.rows[past.offsets[1:] - 1]].copy()  # each user's last known event
    # the tail takes the time of the user's first test event and comes first: sorting is stable
    tail[time_key] = test_events.groupby(seq_key, sort=False)[time_key].min().reindex(tail[seq_key]).to_numpy()
    joined = group(pd.concat([tail, test_events], ignore_index=True))
    row = pd.Index(past.session_ids).get_indexer(joined.session_ids)  # -1: no history
    continued = (row >= 0).astype(np.int64)
    states = [np.zeros((len(row), s.shape[1]), backend.FLOATX) for s in before]
    for start, end in zip(states, before):
        start[row >= 0] = end[row[row >= 0]]
    logger.info("evaluation continues %d of %d test users from their history", int(continued.sum()), len(row))
    return joined, _StartStates(continued, states)


def _states_before_last(model, data, batch_size, steps):
    """Hidden states (per layer, (n_seq, h)) after feeding each sequence all but its last event.

    One compiled K-step feed (no scoring) over the session-parallel schedule; a sequence of one
    event keeps the zero state.
    """
    key = ("feed_states", batch_size, steps)
    if key not in model._fns:
        model._fns[key] = _compile_feed_fn(model, batch_size, steps)
    fn = model._fns[key]
    layers = model._cfg.layers
    states = [np.zeros((data.n_sessions, h), backend.FLOATX) for h in layers]
    hidden = model._zero_hidden(batch_size)
    length = np.diff(data.offsets)
    order = np.arange(data.n_sessions)
    for chunk in sessiondata.session_parallel_schedule(data, order, batch_size, steps):
        out = fn(chunk.inputs, chunk.reset, *hidden)
        hidden = [o[-1] for o in out]
        session = np.maximum(chunk.session, 0)
        k, b = np.nonzero(chunk.active & (chunk.position == length[session] - 2))
        if len(k):
            for layer, o in enumerate(out):
                states[layer][chunk.session[k, b]] = np.asarray(o)[k, b]
    return states


@backend.float32_graph
def _compile_feed_fn(model, batch_size, steps):
    """Compile K feeding steps (no scoring): (inputs, reset, *hidden) -> (K, B, h) states per layer."""
    seqs = backend.schedule_inputs(steps, batch_size)
    inputs, reset = seqs[0], seqs[2]
    hidden = [pt.tensor(f"hidden_{i}", shape=(batch_size, h), dtype=backend.FLOATX)
              for i, h in enumerate(model._cfg.layers)]
    outputs = pytensor.scan(lambda item_idx, r, *states: model._step_graph(item_idx, r, list(states)),
                            sequences=[inputs, reset], outputs_info=hidden, n_steps=steps, return_updates=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return backend.compile_fn([inputs, reset, *hidden], list(outputs), donate=False)
