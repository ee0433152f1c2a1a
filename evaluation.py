"""Next-item evaluation: Recall@N and MRR@N, session-parallel, on the compute device.

Each test session starts from a zero hidden state; a session of length L gives L-1 points (input
item t, target t+1); test events whose item the model does not know are dropped first. A model
fitted with ``user_key`` is evaluated on user sequences; given the users' ``history``, each test
sequence continues from the state the model reached on that history. The target is ranked
against every item of the model (or a candidate subset) with one of four tie modes
(# conformance: tie modes).

Models are used only through their public interface (`gru4rec_lib.interface.SessionModel`):
``reset_state`` and ``score_steps`` with a `Ranking` reduction. GRU4Rec runs each K-step chunk,
the ranking included, as one compiled call on its device that returns only the metric sums (and,
on request, the ranks); the baselines score on the host through ``score_step``.
"""
import logging
import time

import numpy as np
import pandas as pd
import pytensor.tensor as pt

from gru4rec_lib import progress, sequences, sessiondata

logger = logging.getLogger(__name__)
MODES = ("standard", "conservative", "median", "tiebreaking")
TIE_SEED = 0  # the tiebreaking draws: a fixed seed per evaluation, so that results repeat
RANK_LIMIT = 2**31 - 1  # cut-offs beyond it are the same as it (ranks are 32-bit on the device)


def target_ranks(scores, target_scores, target_in_scores, mode, xp=np, uniform=None):
    """Rank of each row's target among the scored items, for numpy (xp=np) or PyTensor (xp=pt).

    standard: 1 + #{s_j > s_t}; conservative: 1 + #{s_j >= s_t, j != t};
    median: 1 + #{s_j > s_t} + #{s_j = s_t, j != t} / 2;
    tiebreaking: 1 + #{s_j > s_t} + floor(u (k + 1)), k = #{s_j = s_t, j != t}, u ~ U[0, 1) per
    row (`uniform`, (B,)): the target takes a uniformly random place among the items it ties
    with, as the authors' code gets by adding tiny uniform noise to every score.
    `target_in_scores` (B,) says whether the target's own column is among `scores` (B, C): its
    own tie is then not counted.
    """
    greater = xp.sum(scores > target_scores[:, None], axis=1)
    if mode == "standard":
        return 1.0 + greater
    equal = np.equal if xp is np else pt.eq  # `==` on PyTensor variables compares identity
    ties = xp.sum(equal(scores, target_scores[:, None]), axis=1) - target_in_scores
    if mode == "tiebreaking":
        return 1.0 + greater + xp.floor(uniform * (ties + 1))
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
    mode : {'standard', 'conservative', 'median', 'tiebreaking'}, default 'standard'
        How ties with the target's score count (see `target_ranks`); tiebreaking draws its
        random places with a fixed seed, so that an evaluation repeats exactly.
    items : array-like or None
        Rank only among these item ids (the target counts whether or not it is among them);
        None: all items of the model.
    batch_size : int, default 512
        Parallel session slots; any number of test sessions works, fewer than this included.
    steps_per_call : int, default 32
        Steps per compiled call (a speed knob).
    show_progress : bool, default False
        A progress bar of mini-batches, when stderr is a terminal.
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
    >>> import gru4rec
    >>> from gru4rec_lib import synthetic
    >>> train, test = synthetic.split_by_time(synthetic.generate_sessions(n_sessions=400, n_items=30, seed=0))
    >>> model = gru4rec.GRU4Rec(layers=(16,), n_epochs=1, n_sample=8, show_progress=False).fit(train)
    >>> result = evaluate(model, test, cutoffs=(5, 20))
    >>> sorted(result['recall'])
    [5, 20]
    """
    cutoffs = _check_args(model, cutoffs, mode, batch_size, steps_per_call)
    started = time.perf_counter()
    item_map = sessiondata.ItemMap(model.item_ids_)
    user_key = model.user_key
    if history is not None and user_key is None:
        raise ValueError("history continues users' hidden states: it needs a GRU4Rec model fitted with user_key")
    reader = sessiondata.SequenceReader(model.session_key, model.item_key, model.time_key, user_key,
                                        model.reset_between_sessions)
    events = reader.load(test_data, allow_pickle=allow_pickle)

    def group(frame, keep_rows=False):
        return reader.group(frame, item_map, drop_unknown=True, keep_rows=keep_rows)
    test = group(events)
    hint = ""
    if test.n_dropped:
        hint = _wrong_kind_hint(events[model.item_key], item_map, model.item_ids_)
        logger.warning("dropped %d test events whose items the model does not know%s", test.n_dropped, hint)
    start = None
    if history is not None:
        past = reader.load(history, allow_pickle=allow_pickle)
        test, start = sequences.continue_histories(model, group, test, events, past, batch_size, steps_per_call)
    if test.n_steps == 0:
        unit = "user" if user_key else "session"
        raise ValueError(f"the test data has no {unit} with 2 or more known items: nothing to evaluate{hint}")
    # no rank exceeds 2**31 - 1 (the catalogue's size + 1), and the device compares in 32 bits: a larger
    # cut-off is that one, not a wrapped-around number
    ranking = Ranking(tuple(min(c, RANK_LIMIT) for c in cutoffs), mode)
    sums, ranks = _run(model, test, ranking, _candidates(item_map, items), batch_size,
                       steps_per_call, return_ranks, show_progress, start)
    n = test.n_steps
    if sums[-1]:  # NaN scores would rank every target first: refuse them rather than report them
        raise ValueError(f"the model's scores are not finite (NaN or inf) at {int(sums[-1])} of {n} evaluation "
                         "points: its weights are damaged or overflow float32; no metric is reported")
    result = {"recall": {c: float(sums[i] / n) for i, c in enumerate(cutoffs)},
              "mrr": {c: float(sums[len(cutoffs) + i] / n) for i, c in enumerate(cutoffs)},
              "n_points": n, "n_dropped": test.n_dropped, "seconds": time.perf_counter() - started}
    if return_ranks:
        result["ranks"] = _rank_frame(test, ranks, user_key or model.session_key, start)
    return result


def _run(model, test, ranking, cand_idx, batch_size, steps, return_ranks, show_progress, start):
    """Score the test schedule chunk by chunk; return the metric sums and the (chunk, ranks) pairs."""
    model.reset_state()  # every evaluation starts from zero states (and resets per session anyway)
    order = np.arange(test.n_sessions)
    chunks = sessiondata.session_parallel_schedule(test, order, batch_size, steps)
    pending, ranks = [], []  # device results are read once at the end: no sync per call
    with progress.bar(sessiondata.n_steps(test, order, batch_size), "evaluate", show_progress) as bar:
        for chunk in chunks:
            chunk_sums, chunk_ranks = model.score_steps(chunk, ranking, cand_idx, keep_values=return_ranks,
                                                        start=start)
            pending.append(chunk_sums)
            if return_ranks:
                ranks.append((chunk, chunk_ranks))
            bar.update(int(chunk.active.any(axis=1).sum()))
            if len(pending) == 1:  # the first call compiles: keep it out of the estimate
                progress.restart_clock(bar)
    return np.sum([np.asarray(p, dtype=float) for p in pending], axis=0), ranks


evaluate_gpu = evaluate  # the reference's name


def _wrong_kind_hint(items, item_map, model_ids):
    """'' or a clause naming test item ids of another type than the model's (``'4'`` against int ids)."""
    unique = pd.unique(items)
    expected, wrong = sessiondata.wrong_kind_ids(unique[item_map.indices(unique) < 0], model_ids)
    if not wrong:
        return ""
    events = int(items.isin(wrong).sum())
    return (f"; {events} dropped test events have item ids of another type than the model's {expected} ids "
            f"(e.g. {wrong[0]!r}, a {sessiondata.id_kind(wrong[0])}): convert the test data's item column, "
            f"e.g. .astype({expected})")


def _check_args(model, cutoffs, mode, batch_size, steps_per_call):
    model.check_fitted()
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is invalid: expected one of {MODES}")
    scalar_or_sequence = np.isscalar(cutoffs) or hasattr(cutoffs, "__iter__")
    if cutoffs is None or isinstance(cutoffs, (str, dict, set)) or not scalar_or_sequence:
        raise ValueError(f"cutoffs={cutoffs!r} is invalid: expected positive ints, e.g. (1, 5, 10, 20)")
    cutoffs = [cutoffs] if np.isscalar(cutoffs) else list(cutoffs)
    if not cutoffs or not all(sessiondata.is_int(c) and c >= 1 for c in cutoffs):
        raise ValueError(f"cutoffs={cutoffs!r} is invalid: expected positive ints, e.g. (1, 5, 10, 20)")
    for name, value in (("batch_size", batch_size), ("steps_per_call", steps_per_call)):
        if not sessiondata.is_int(value) or value < 1:
            raise ValueError(f"{name}={value!r} is invalid: expected a positive int")
    return [int(c) for c in cutoffs]


def _candidates(item_map, items):
    """Candidate item indices (None: all items); unknown candidate ids raise ValueError."""
    if items is None:
        return None
    if isinstance(items, (str, bytes, set, dict)) or not hasattr(items, "__iter__"):
        raise TypeError(f"items must be a list, array or Series of item ids (or None), got {type(items).__name__}")
    if len(sessiondata.id_array(items)) == 0:
        raise ValueError("items is empty: pass candidate item ids, or None for all items")
    return np.unique(item_map.lookup(items, "candidate items")).astype(np.int32)


def _rank_frame(test, ranks, session_key, init=None):
    active = np.concatenate([c.active.ravel() for c, _ in ranks])
    session = np.concatenate([c.session.ravel() for c, _ in ranks])[active]
    position = np.concatenate([c.position.ravel() for c, _ in ranks])[active]
    if init is not None:  # continued sequences begin with the last history event: position -1
        position = position - init.continued[session]
    values = np.concatenate([np.asarray(r).ravel() for _, r in ranks])[active]
    return pd.DataFrame({session_key: test.session_ids[session], "position": position, "rank": values})


class Ranking:
    """The evaluation's reduction for `SessionModel.score_steps`: target ranks, then metric sums.

    Equal (and hashed alike) when cutoffs and mode are: a model may cache its compiled ranking
    by it. Mode 'tiebreaking' draws one uniform number per evaluation point (`draws`), from a
    generator seeded with TIE_SEED when the Ranking is made, so that an evaluation repeats.
    """

    def __init__(self, cutoffs, mode):
        self.cutoffs, self.mode = tuple(cutoffs), mode
        self.n_draws = int(mode == "tiebreaking")
        self._rng = np.random.default_rng(TIE_SEED) if self.n_draws else None

    def __eq__(self, other):
        return isinstance(other, Ranking) and (self.cutoffs, self.mode) == (other.cutoffs, other.mode)

    def __hash__(self):
        return hash((self.cutoffs, self.mode))

    def draws(self, chunk):
        """The per-step random inputs of one chunk: n_draws arrays (K, B) float32."""
        return [self._rng.random(chunk.active.shape).astype(np.float32) for _ in range(self.n_draws)]

    def step(self, scores, target_scores, target_in_scores, xp, *draws):
        """Rank (B,) of each slot's target (see `target_ranks`); NaN where a score is not finite."""
        ranks = target_ranks(scores, target_scores, target_in_scores, self.mode, xp=xp,
                             uniform=draws[0] if draws else None)
        finite = xp.all(xp.isfinite(scores), axis=1) & xp.isfinite(target_scores)
        return (pt.switch if xp is pt else np.where)(finite, ranks, np.nan)

    def total(self, values, active, xp):
        """Hits@N, then the reciprocal-rank sums @N, then the count of points with a non-finite
        score (it rides along with the sums: no extra sync), over the active points of a chunk."""
        return _metric_sums(values, active, self.cutoffs, xp=xp) + [xp.sum(xp.isnan(values) & active)]


def _metric_sums(ranks, active, cutoffs, xp=np):
    """[hits@N for N in cutoffs] + [sum of 1/rank where rank <= N], over the active points."""
    hits = [(ranks <= c) & active for c in cutoffs]
    recall = [xp.sum(h) for h in hits]
    mrr = [xp.sum(xp.switch(h, 1.0 / ranks, 0.0)) if xp is pt else
           np.divide(1.0, ranks, out=np.zeros(np.shape(ranks)), where=h).sum() for h in hits]
    return recall + mrr
