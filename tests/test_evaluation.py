"""Tests for evaluation.evaluate: recall/MRR vs a brute-force numpy evaluator.

The reference steps every test session through the model's own `predict_next_batch` (a few
parallel slots, a fresh session id per session), takes the scores of all items and ranks the
target with explicit Python loops. Fitted models are shared per module (each `fit` compiles).
"""
import itertools

import numpy as np
import pandas as pd
import pytest

import evaluation
import gru4rec
from gru4rec_lib import synthetic

CUTOFFS = (1, 3, 5, 10, 20)
MODES = ("standard", "conservative", "median")
UNKNOWN = 10_000  # item ids from here on never occur in the training data
_TOKENS = itertools.count(1_000_000)  # session ids for predict_next_batch, never reused


# ---------------------------------------------------------------- the brute-force reference
def known_sessions(model, test, session_key="SessionId", item_key="ItemId", time_key="Time"):
    """[(session id, [known item ids in time order])] for the sessions with 2+ known items."""
    known = set(model.item_ids_.tolist())
    sessions = []
    for sid, group in test.groupby(session_key, sort=True):
        rows = sorted(zip(group[time_key].tolist(), range(len(group)), group[item_key].tolist()))
        items = [item for _, _, item in rows if item in known]
        if len(items) >= 2:
            sessions.append((sid, items))
    return sessions


def brute_force_points(model, test, slots=3):
    """Score every evaluation point with `predict_next_batch`, `slots` sessions side by side.

    Returns {(session id, position): (scores of all items as float64 (n_items,), target column)}.
    """
    column = {item: j for j, item in enumerate(model.item_ids_.tolist())}
    queue = iter(known_sessions(model, test))
    idle_token, idle_item = next(_TOKENS), model.item_ids_[0]
    running = [None] * slots  # [token, session id, items, position] per slot

    def refill(slot):
        nxt = next(queue, None)
        running[slot] = None if nxt is None else [next(_TOKENS), nxt[0], nxt[1], 0]

    for slot in range(slots):
        refill(slot)
    points = {}
    while any(r is not None for r in running):
        tokens = [r[0] if r else idle_token for r in running]
        inputs = [r[2][r[3]] if r else idle_item for r in running]
        scores = model.predict_next_batch(tokens, inputs, batch=slots)
        assert list(scores.index) == list(model.item_ids_)
        for slot, r in enumerate(running):
            if r is None:
                continue
            _, sid, items, pos = r
            points[(sid, pos)] = (scores.iloc[:, slot].to_numpy(np.float64), column[items[pos + 1]])
            r[3] += 1
            if r[3] == len(items) - 1:
                refill(slot)
    return points


def brute_rank(scores, target, mode, candidates=None):
    """Rank of column `target` among `candidates` (all columns if None), by explicit comparisons."""
    target_score = scores[target]
    greater = equal = 0
    for j in range(len(scores)) if candidates is None else candidates:
        if j == target:
            continue  # the target's own column never ties with itself
        if scores[j] > target_score:
            greater += 1
        elif scores[j] == target_score:
            equal += 1
    if mode == "standard":
        return 1.0 + greater
    if mode == "conservative":
        return 1.0 + greater + equal
    return 1.0 + greater + equal / 2.0


def brute_ranks(points, mode, candidates=None):
    return {key: brute_rank(scores, target, mode, candidates) for key, (scores, target) in points.items()}


def brute_metrics(ranks, cutoffs=CUTOFFS):
    ranks = list(ranks)
    n = len(ranks)
    recall = {c: sum(1 for r in ranks if r <= c) / n for c in cutoffs}
    mrr = {c: sum(1.0 / r for r in ranks if r <= c) / n for c in cutoffs}
    return recall, mrr


def rank_dict(result):
    frame = result["ranks"]
    return {(s, int(p)): float(r) for s, p, r in zip(frame["SessionId"], frame["position"], frame["rank"])}


def assert_matches(result, ranks, cutoffs=CUTOFFS):
    """`result` (with return_ranks) equals the brute-force ranks point by point and in the metrics."""
    recall, mrr = brute_metrics(ranks.values(), cutoffs)
    assert result["n_points"] == len(ranks)
    assert result["recall"] == pytest.approx(recall, abs=1e-9)
    assert result["mrr"] == pytest.approx(mrr, rel=1e-5, abs=1e-7)
    if "ranks" in result:
        assert rank_dict(result) == pytest.approx(ranks, abs=1e-9)


def check_invariants(result):
    """recall@N non-decreasing in N, MRR@1 == recall@1, MRR@N <= recall@N, all in [0, 1]."""
    recall, mrr = result["recall"], result["mrr"]
    cutoffs = sorted(recall)
    if 1 in recall:
        assert mrr[1] == pytest.approx(recall[1])
    for a, b in zip(cutoffs, cutoffs[1:]):
        assert recall[a] <= recall[b] and mrr[a] <= mrr[b] + 1e-7
    for c in cutoffs:
        assert 0.0 <= mrr[c] <= recall[c] + 1e-7 and recall[c] <= 1.0


# ---------------------------------------------------------------- data and models
def with_unknown_items(test):
    """The test frame plus unknown items: inside sessions, whole unknown sessions, sessions that
    shrink to length 1 or 2; rows shuffled (the evaluator must sort)."""
    rows = [test]
    for k, (sid, group) in enumerate(itertools.islice(test.groupby("SessionId"), 6)):
        times = np.sort(group["Time"].to_numpy())
        t = times[0] - 0.5 if len(times) == 1 else (times[0] + times[1]) / 2
        rows.append(pd.DataFrame({"SessionId": [sid], "ItemId": [UNKNOWN + k], "Time": [t]}))
    known = test["ItemId"].iloc[0], test["ItemId"].iloc[1]
    t0 = test["Time"].max() + 10
    extra = [(900_001, UNKNOWN + 50, t0), (900_001, UNKNOWN + 51, t0 + 1), (900_001, UNKNOWN + 52, t0 + 2),
             (900_002, known[0], t0), (900_002, UNKNOWN + 53, t0 + 1),
             (900_003, UNKNOWN + 54, t0), (900_003, known[0], t0 + 1), (900_003, UNKNOWN + 55, t0 + 2),
             (900_003, known[1], t0 + 3)]
    rows.append(pd.DataFrame(extra, columns=["SessionId", "ItemId", "Time"]))
    return pd.concat(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def data():
    events = synthetic.generate_sessions(n_sessions=300, n_items=40, seed=3)
    train, test = synthetic.split_by_time(events, test_fraction=0.2)
    return train, with_unknown_items(test)


@pytest.fixture(scope="module")
def model(data):
    return gru4rec.GRU4Rec(loss="bpr-max", final_act="elu-1", layers=(8,), n_epochs=2, n_sample=4, batch_size=16,
                           steps_per_call=8, show_progress=False, seed=1).fit(data[0])


@pytest.fixture(scope="module")
def points(model, data):
    return brute_force_points(model, data[1])


def clone(model, folder):
    """An independent copy of a fitted model (save -> load), whose weights a test may change."""
    return gru4rec.GRU4Rec.load(model.save(folder / "model.npz"))


def set_weight(model, name, value):
    state = model.state_dict()
    state[name] = np.asarray(value, np.float32)
    model.load_state_dict(state)


def get_weight(model, name):
    return model.state_dict()[name]


def evaluate(model, test, **kw):
    kw = {"cutoffs": CUTOFFS, "batch_size": 8, "steps_per_call": 4, "return_ranks": True, **kw}
    return evaluation.evaluate(model, test, **kw)


# ---------------------------------------------------------------- 1. against the brute force
def test_data_has_unknown_items_and_short_sessions(model, data):
    test = data[1]
    known = test["ItemId"].isin(model.item_ids_)
    lengths = test[known].groupby("SessionId").size()
    assert (~known).sum() >= 12 and (lengths == 1).sum() >= 3 and (lengths == 2).sum() >= 3
    assert test["SessionId"].nunique() > lengths.size  # a session of unknown items only


@pytest.mark.parametrize("mode", MODES)
def test_evaluate_matches_brute_force(model, data, points, mode):
    test = data[1]
    before = test.copy(deep=True)
    result = evaluate(model, test, mode=mode)
    assert_matches(result, brute_ranks(points, mode))
    assert result["n_dropped"] == int((~test["ItemId"].isin(model.item_ids_)).sum())
    assert result["seconds"] > 0
    check_invariants(result)
    pd.testing.assert_frame_equal(test, before)  # the caller's frame is unchanged


def test_brute_force_reference_is_not_trivial(points):
    ranks = brute_ranks(points, "standard")
    recall, _ = brute_metrics(ranks.values())
    assert len(points) > 150
    assert 0.1 < recall[1] < recall[5] < recall[20] < 1.0  # a spread of ranks, not all hits


# ---------------------------------------------------------------- 2. deliberate ties
@pytest.fixture(scope="module")
def tied(model, data, points, tmp_path_factory):
    """A copy whose output layer makes many items tie exactly: the items of `group` get Wy = 0 and
    By from 6 values, 3 items each, amid the trained scores (elu-1 keeps equal inputs equal); their
    scores do not depend on the state."""
    copy = clone(model, tmp_path_factory.mktemp("tied"))
    targets = pd.Series([model.item_ids_[t] for _, t in points.values()])
    group = model.item_map_.indices(targets.value_counts().index[:18])  # the most frequent targets
    wy, by = get_weight(copy, "Wy"), get_weight(copy, "By")
    wy[group] = 0.0
    by[group] = np.array([0.4, 0.3, 0.2, 0.1, 0.0, -0.1])[np.arange(len(group)) % 6]
    set_weight(copy, "Wy", wy)
    set_weight(copy, "By", by)
    return copy, brute_force_points(copy, data[1])


@pytest.mark.slow
def test_ties_make_the_modes_differ_and_each_matches_brute_force(tied, data):
    copy, points = tied
    results = {mode: evaluate(copy, data[1], mode=mode) for mode in MODES}
    for mode in MODES:
        assert_matches(results[mode], brute_ranks(points, mode))
        check_invariants(results[mode])
    std, cons, med = (rank_dict(results[m]) for m in MODES)
    n_tied = sum(cons[key] > std[key] for key in std)
    assert n_tied > len(std) / 4  # many targets tie with other items
    for key in std:
        assert std[key] <= med[key] <= cons[key]
        assert med[key] == pytest.approx((std[key] + cons[key]) / 2)
    for c in CUTOFFS:
        for metric in ("recall", "mrr"):
            assert results["standard"][metric][c] >= results["median"][metric][c] >= results["conservative"][metric][c]
    for c in (3, 5):
        assert results["standard"]["recall"][c] > results["median"]["recall"][c] > results["conservative"]["recall"][c]
    for c in (3, 5, 10):
        assert results["standard"]["mrr"][c] > results["median"]["mrr"][c] > results["conservative"]["mrr"][c]


# ---------------------------------------------------------------- 3. candidate subsets
@pytest.mark.parametrize("mode", MODES)
def test_candidate_subset_matches_brute_force(tied, data, mode):
    copy, points = tied
    rng = np.random.default_rng(5)
    cand_idx = np.sort(rng.choice(copy.n_items_, size=15, replace=False))
    items = copy.item_ids_[cand_idx]
    expected = brute_ranks(points, mode, candidates=cand_idx.tolist())
    targets = [t for _, t in points.values()]
    assert 0 < np.isin(targets, cand_idx).mean() < 1  # targets both inside and outside the subset
    assert len({r for r in expected.values()}) > 5
    result = evaluate(copy, data[1], mode=mode, items=items)
    assert_matches(result, expected)
    # the candidates' order and duplicates do not matter
    shuffled = np.concatenate([items[::-1], items[:4]])
    assert evaluate(copy, data[1], mode=mode, items=shuffled)["ranks"].equals(result["ranks"])


@pytest.mark.slow
def test_candidate_subset_of_all_items_equals_no_subset(model, data):
    everything = evaluate(model, data[1], return_ranks=False)
    subset = evaluate(model, data[1], items=model.item_ids_[::-1], return_ranks=False)
    assert subset["recall"] == pytest.approx(everything["recall"], abs=1e-9)
    assert subset["mrr"] == pytest.approx(everything["mrr"], rel=1e-6)


def test_subset_with_only_the_target_gives_rank_one(model, data, points):
    """One candidate: a target equal to it has no competitor; any other target is ranked against it."""
    test = data[1]
    target = model.item_ids_[0]
    result = evaluate(model, test, items=[target], mode="conservative")
    ranks = rank_dict(result)
    for key, (scores, t) in points.items():
        expected = 1.0 if t == 0 else 1.0 + (scores[0] >= scores[t])
        assert ranks[key] == expected


# ---------------------------------------------------------------- 4. any number of sessions
def one_session(model, test, length=5):
    sizes = test[test["ItemId"].isin(model.item_ids_)].groupby("SessionId").size()
    sid = sizes.index[sizes == length][0]
    return test[test["SessionId"] == sid]


@pytest.mark.parametrize("batch_size, steps_per_call", [(8, 4), (1, 1), (64, 1000)])
def test_exactly_one_test_session(model, data, points, batch_size, steps_per_call):
    session = one_session(model, data[1])
    sid = session["SessionId"].iloc[0]
    expected = {key: rank for key, rank in brute_ranks(points, "standard").items() if key[0] == sid}
    assert len(expected) == 4
    result = evaluate(model, session, batch_size=batch_size, steps_per_call=steps_per_call)
    assert_matches(result, expected)


@pytest.mark.parametrize("batch_size, steps_per_call", [(1, 5), (3, 1), (64, 1000), (500, 2)])
def test_results_do_not_depend_on_batch_size_or_steps_per_call(model, data, points, batch_size, steps_per_call):
    n_sessions = len(known_sessions(model, data[1]))
    assert n_sessions < 64  # 64 and 500 slots: fewer sessions than the batch
    result = evaluate(model, data[1], batch_size=batch_size, steps_per_call=steps_per_call)
    assert_matches(result, brute_ranks(points, "standard"))
    reference = evaluate(model, data[1])
    assert result["recall"] == reference["recall"]
    assert result["mrr"] == pytest.approx(reference["mrr"], rel=1e-6)


def test_repeated_evaluation_starts_from_zero_states(model, data):
    """The compiled evaluator is cached with its slot states; running it again gives the same ranks."""
    first = evaluate(model, data[1], batch_size=3, steps_per_call=1)
    again = evaluate(model, data[1], batch_size=3, steps_per_call=1)
    assert first["ranks"].equals(again["ranks"])


# ---------------------------------------------------------------- 5. return_ranks and invariants
@pytest.mark.slow
def test_rank_frame_has_one_row_per_point_and_gives_the_metrics(model, data, points):
    result = evaluate(model, data[1], mode="median")
    frame = result["ranks"]
    assert list(frame.columns) == ["SessionId", "position", "rank"]
    assert len(frame) == result["n_points"] == len(points)
    assert not frame.duplicated(["SessionId", "position"]).any()
    assert set(rank_dict(result)) == set(points)
    ranks = frame["rank"].to_numpy(np.float64)
    assert ranks.min() >= 1 and ranks.max() <= model.n_items_
    for c in CUTOFFS:
        assert result["recall"][c] == pytest.approx(np.mean(ranks <= c), abs=1e-9)
        assert result["mrr"][c] == pytest.approx(np.mean(np.where(ranks <= c, 1 / ranks, 0)), rel=1e-5)
    without = evaluate(model, data[1], mode="median", return_ranks=False)
    assert "ranks" not in without
    assert without["recall"] == result["recall"]
    assert without["mrr"] == pytest.approx(result["mrr"], rel=1e-6)


def test_metric_invariants_and_scalar_cutoff(model, data):
    result = evaluate(model, data[1], cutoffs=(20, 1, 2, 7), return_ranks=False)
    assert list(result["recall"]) == [20, 1, 2, 7]  # the caller's order
    check_invariants(result)
    assert result["mrr"][1] == pytest.approx(result["recall"][1])
    single = evaluate(model, data[1], cutoffs=5, return_ranks=False)
    assert list(single["recall"]) == [5]
    assert single["recall"][5] == pytest.approx(evaluate(model, data[1])["recall"][5])


def test_cutoffs_beyond_32_bits_count_every_rank(model, data):
    """A cut-off at or above the catalogue's size counts every point, however large (the device
    compares ranks in 32 bits: 2**31 and 2**32 + 5 must not wrap around to 0 and 5)."""
    n_items = len(model.item_ids_)
    huge = (n_items, 2**31 - 1, 2**31, 2**32 + 5, 10**20)
    result = evaluate(model, data[1], cutoffs=(5, *huge), return_ranks=False)
    for c in huge:
        assert result["recall"][c] == 1.0, c
        assert result["mrr"][c] == result["mrr"][n_items]
    assert result["recall"][5] < 1.0


def test_target_ranks_numpy_formula():
    """The shared numpy/PyTensor rank formula, on a hand-made row with ties."""
    scores = np.array([[0.3, 0.5, 0.3, 0.1, 0.3]])
    target = scores[:, 0]
    for in_scores, std, cons, med in ((1, 2, 4, 3), (0, 2, 5, 3.5)):
        got = [evaluation.target_ranks(scores, target, np.array([in_scores]), m)[0] for m in MODES]
        assert got == [std, cons, med]


# ---------------------------------------------------------------- final_act softmax
@pytest.fixture(scope="module")
def softmax_model(data):
    return gru4rec.GRU4Rec(loss="cross-entropy", final_act="softmax", layers=(8,), n_epochs=1, n_sample=4,
                           batch_size=16, steps_per_call=8, show_progress=False, seed=2).fit(data[0])


def test_softmax_model_is_consistent_with_predicted_probabilities(softmax_model, data):
    """The evaluator ranks logits, predict_next_batch returns probabilities: same order up to ties
    that rounding may create among probabilities."""
    points = brute_force_points(softmax_model, data[1])
    result = evaluate(softmax_model, data[1])
    ranks = rank_dict(result)
    low, high = brute_ranks(points, "standard"), brute_ranks(points, "conservative")
    assert all(low[key] <= ranks[key] <= high[key] for key in points)
    assert sum(ranks[key] == low[key] for key in points) >= 0.95 * len(points)
    for key, (scores, _) in list(points.items())[:20]:
        assert scores.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_softmax_is_ranked_on_logits_without_underflow_ties(softmax_model, data, tmp_path_factory):
    """Items with logits around -200 all have probability 0.0 in float32; the evaluator still ranks
    them by their distinct logits, so no mode sees a tie, and the ranks are known exactly."""
    copy = clone(softmax_model, tmp_path_factory.mktemp("softmax"))
    n = copy.n_items_
    group = np.arange(0, n, 2)  # every other item: logit -200 - 0.5 k, state-independent
    wy, by = get_weight(copy, "Wy"), get_weight(copy, "By")
    wy[group], by[group] = 0.0, -200.0 - 0.5 * np.arange(len(group))
    set_weight(copy, "Wy", wy)
    set_weight(copy, "By", by)
    points = brute_force_points(copy, data[1])
    probs_tie = sum(brute_rank(s, t, "conservative") > brute_rank(s, t, "standard") for s, t in points.values())
    assert probs_tie > 0  # the probabilities do tie (at 0.0) ...
    results = {mode: rank_dict(evaluate(copy, data[1], mode=mode)) for mode in ("standard", "conservative")}
    assert results["standard"] == results["conservative"]  # ... the ranked logits do not
    n_checked = 0
    for key, (_, target) in points.items():
        if target % 2 == 0:  # in the group: below all n - len(group) others and the group items before it
            assert results["standard"][key] == (n - len(group)) + target // 2 + 1
            n_checked += 1
    assert n_checked > 20


# ---------------------------------------------------------------- 6. errors
@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "best"}, r"mode='best' is invalid"),
    ({"mode": "Standard"}, r"mode='Standard' is invalid"),
    ({"cutoffs": ()}, r"cutoffs=\[\] is invalid"),
    ({"cutoffs": (5, 0)}, r"cutoffs=\[5, 0\] is invalid"),
    ({"cutoffs": (5.0,)}, r"cutoffs=\[5.0\] is invalid"),
    ({"cutoffs": -3}, r"cutoffs=\[-3\] is invalid"),
    ({"cutoffs": ("20",)}, r"cutoffs=\['20'\] is invalid"),
    ({"cutoffs": (True, 5)}, r"cutoffs=\[True, 5\] is invalid"),
    ({"batch_size": 0}, r"batch_size=0 is invalid"),
    ({"batch_size": True}, r"batch_size=True is invalid"),
    ({"steps_per_call": 1.5}, r"steps_per_call=1.5 is invalid"),
    ({"items": [UNKNOWN + 1, "nope"]}, r"2 candidate items are unknown to the model"),
    ({"items": []}, r"items is empty"),
    ({"cutoffs": None}, r"cutoffs=None is invalid: expected positive ints"),
    ({"items": [2, "9"]}, r"1 candidate items are unknown to the model, e\.g\. \['9'\]; 1 of another type"),
    ({"items": [True, 2]}, r"1 candidate items are unknown to the model, e\.g\. \[True\]"),  # not the id 1
])
def test_bad_arguments_raise(model, data, kwargs, message):
    test = data[1]
    before = test.copy(deep=True)
    with pytest.raises(ValueError, match=message):
        evaluation.evaluate(model, test, **kwargs)
    pd.testing.assert_frame_equal(test, before)


@pytest.mark.parametrize("items", [{2, 9}, 2, "29"])
def test_items_that_are_not_a_sequence_raise_type_errors(model, data, items):
    with pytest.raises(TypeError, match="items must be a list, array or Series of item ids"):
        evaluation.evaluate(model, data[1], items=items)


@pytest.mark.parametrize("events", [
    [(1, UNKNOWN, 0.0), (1, UNKNOWN + 1, 1.0), (2, UNKNOWN + 2, 2.0)],  # no known item at all
    [(1, 0, 0.0), (1, UNKNOWN, 1.0), (2, 1, 2.0), (3, 2, 3.0)],  # known items, but in length-1 sessions
])
def test_nothing_to_evaluate_raises(model, events):
    test = pd.DataFrame(events, columns=["SessionId", "ItemId", "Time"])
    before = test.copy(deep=True)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluation.evaluate(model, test)
    pd.testing.assert_frame_equal(test, before)


def test_test_ids_of_another_type_are_named(model, data, points, caplog):
    """Item ids read as strings against a model with int ids can never match: the error says so."""
    test = data[1]
    as_str = test.assign(ItemId=test["ItemId"].astype(str))
    with pytest.raises(ValueError, match=r"nothing to evaluate; \d+ dropped test events have item ids of another "
                                         r"type than the model's int ids \(e.g. '\d+', a str\).*astype\(int\)"):
        evaluation.evaluate(model, as_str)
    # some rows converted, some not: the evaluation runs on the int rows, and the warning counts the others
    some = test["SessionId"].isin(test["SessionId"].unique()[:3])
    mixed = test.assign(ItemId=test["ItemId"].astype(object).where(~some, test["ItemId"].astype(str)))
    with caplog.at_level("WARNING", logger="evaluation"):
        result = evaluate(model, mixed)
    n_wrong = int(some.sum())
    assert f"; {n_wrong} dropped test events have item ids of another type" in caplog.text
    assert result["n_dropped"] == n_wrong + int((~test["ItemId"][~some].isin(model.item_ids_)).sum())
    converted = set(test["SessionId"][some])
    kept = {key: point for key, point in points.items() if key[0] not in converted}
    assert 0 < len(kept) < len(points)
    assert_matches(result, brute_ranks(kept, "standard"))


def test_unknown_ids_of_the_right_type_get_no_type_hint(model, data, caplog):
    with caplog.at_level("WARNING", logger="evaluation"):
        evaluate(model, data[1])
    assert "dropped" in caplog.text and "another type" not in caplog.text


def test_missing_column_raises(model, data):
    with pytest.raises(KeyError, match="column 'SessionId' not found"):
        evaluation.evaluate(model, data[1].rename(columns={"SessionId": "sid"}))


def test_unfitted_model_raises(data):
    with pytest.raises(gru4rec.NotFittedError, match="not fitted yet: call fit first"):
        evaluation.evaluate(gru4rec.GRU4Rec(), data[1])
