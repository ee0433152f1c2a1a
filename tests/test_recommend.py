"""Tests for live sessions (`GRU4Rec.recommend`, `end_sessions`) and `predict_next_batch`.

References: replaying a session's whole history from the zero state in one call, and the top-k
of the scores that `predict_next_batch` gives after stepping through the same history.
"""
import itertools

import numpy as np
import pandas as pd
import pytest

import gru4rec
from gru4rec_lib import synthetic

N_ITEMS = 30
_TOKENS = itertools.count(2_000_000)  # predict_next_batch session ids, never reused


@pytest.fixture(scope="module")
def model():
    events = synthetic.generate_sessions(n_sessions=250, n_items=N_ITEMS, seed=4)
    return gru4rec.GRU4Rec(loss="bpr-max", final_act="elu-1", layers=(8,), n_epochs=1, n_sample=4, batch_size=16,
                           steps_per_call=8, show_progress=False, seed=3).fit(events)


@pytest.fixture(scope="module")
def string_model():
    events = synthetic.generate_sessions(n_sessions=200, n_items=20, string_ids=True, seed=5)
    return gru4rec.GRU4Rec(loss="bpr-max", final_act="linear", layers=(8,), n_epochs=1, n_sample=4, batch_size=16,
                           steps_per_call=8, show_progress=False, seed=3).fit(events)


@pytest.fixture
def fresh(model):
    """The shared model with no live session before and after the test."""
    model.end_sessions()
    yield model
    model.end_sessions()


def histories(model, seed, n, length):
    rng = np.random.default_rng(seed)
    return [list(model.item_ids_[rng.integers(0, model.n_items_, size=length)]) for _ in range(n)]


def replay(model, history, k):
    """Top-k of a new session fed its whole history in one call (then forgotten)."""
    sid = ("replay", next(_TOKENS))
    out = model.recommend([sid], [list(history)], k=k)
    model.end_sessions([sid])
    return out[0][0], out[1][0]


def stepped_scores(model, history):
    """Scores of all items after stepping `history` through `predict_next_batch` (batch=1)."""
    sid = next(_TOKENS)
    for item in history:
        scores = model.predict_next_batch([sid], [item], batch=1)
    return scores.iloc[:, 0]


def assert_same_topk(a, b):
    assert list(a[0]) == list(b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- state
def test_stateful_calls_equal_replay_and_predict_next_batch(fresh):
    model, k = fresh, 7
    history = histories(model, 0, 1, 6)[0]
    for item in history:
        ids, scores = model.recommend(["visitor"], [item], k=k)
    assert ids.shape == scores.shape == (1, k)
    assert_same_topk((ids[0], scores[0]), replay(model, history, k))
    predicted = stepped_scores(model, history)
    best = predicted.sort_values(ascending=False, kind="stable")[:k]
    assert_same_topk((ids[0], scores[0]), (best.index.to_numpy(), best.to_numpy()))
    assert np.all(np.diff(scores[0]) <= 0)  # best first


def test_histories_in_chunks_equal_one_call(fresh):
    model = fresh
    history = histories(model, 1, 1, 7)[0]
    model.recommend(["s"], [history[:3]], k=5)
    model.recommend(["s"], [np.array(history[3:4])], k=5)
    model.recommend(["s"], [[]], k=5)  # no new item: scores only
    out = model.recommend(["s"], [pd.Series(history[4:])], k=5)
    assert_same_topk((out[0][0], out[1][0]), replay(model, history, 5))


def test_concurrent_sessions_do_not_leak_state(fresh):
    model, k = fresh, 6
    h = dict(zip("abc", histories(model, 2, 3, 5)))
    calls = [  # interleaved, with different sessions and batch sizes per call
        (["a", "b"], [h["a"][0], h["b"][:2]]),
        (["c"], [h["c"][:1]]),
        (["b", "c", "a"], [h["b"][2], h["c"][1:4], h["a"][1:3]]),
        (["a"], [h["a"][3]]),
        (["c", "b", "a"], [h["c"][4:], h["b"][3:], h["a"][4]]),
    ]
    for sessions, items in calls:
        ids, scores = model.recommend(sessions, items, k=k)
    for row, s in enumerate(["c", "b", "a"]):
        assert_same_topk((ids[row], scores[row]), replay(model, h[s], k))
    # sessions fed together in one call, each with its own history, equal each one alone
    ids, scores = model.recommend(["x", "y", "z"], [h["a"], h["b"][:2], h["c"][0]], k=k)
    for row, history in enumerate([h["a"], h["b"][:2], h["c"][:1]]):
        assert_same_topk((ids[row], scores[row]), replay(model, history, k))


def test_new_session_scores_from_zero_state(fresh):
    """A new session with no item yet gets the context-free ranking final_act(By) (h = 0)."""
    model = fresh
    ids, scores = model.recommend(["e1", "e2"], [[], []], k=N_ITEMS)
    np.testing.assert_array_equal(ids[0], ids[1])
    by = model.state_dict()["By"].astype(np.float64)
    elu = np.where(by >= 0, by, np.expm1(np.minimum(by, 0)))  # final_act elu-1
    order = np.argsort(-elu, kind="stable")
    assert list(ids[0]) == list(model.item_ids_[order])
    np.testing.assert_allclose(scores[0], elu[order], rtol=1e-5, atol=1e-6)


def test_end_sessions_forgets(fresh):
    model, k = fresh, 5
    ha, hb = histories(model, 3, 2, 4)
    model.recommend(["a", "b"], [ha, hb], k=k)
    model.end_sessions(["a", "never-seen"])  # unknown ids are ignored
    restarted = model.recommend(["a"], [ha[-1:]], k=k)
    assert_same_topk((restarted[0][0], restarted[1][0]), replay(model, ha[-1:], k))
    kept = model.recommend(["b"], [[]], k=k)
    assert_same_topk((kept[0][0], kept[1][0]), replay(model, hb, k))
    model.end_sessions()
    after_all = model.recommend(["b"], [[]], k=k)
    assert_same_topk((after_all[0][0], after_all[1][0]), replay(model, [], k))
    model.end_sessions()
    model.end_sessions(["x"])  # nothing live: no error


# ---------------------------------------------------------------- exclude_seen and unknown items
def test_exclude_seen_removes_every_item_of_the_session(fresh):
    model = fresh
    history = histories(model, 4, 1, 8)[0]
    model.recommend(["s"], [history[:4]], k=3)
    k = model.n_items_ - len(set(history))
    ids, scores = model.recommend(["s"], [history[4:]], k=k, exclude_seen=True)
    assert set(ids[0]) == set(model.item_ids_) - set(history)  # exactly the unseen items
    assert np.isfinite(scores).all()
    plain = model.recommend(["t"], [history], k=model.n_items_)
    unseen = [(i, s) for i, s in zip(plain[0][0], plain[1][0]) if i not in set(history)]
    assert list(ids[0]) == [i for i, _ in unseen]  # the same scores, seen items removed
    np.testing.assert_allclose(scores[0], [s for _, s in unseen], rtol=1e-5, atol=1e-6)
    # other sessions are not affected by this session's items
    other = model.recommend(["u"], [[]], k=model.n_items_, exclude_seen=True)
    assert set(other[0][0]) == set(model.item_ids_)


def test_exclude_seen_per_session_when_fed_together(fresh):
    model = fresh
    hs = histories(model, 7, 3, 5)
    model.recommend(["a", "b", "c"], hs, k=1)
    model.recommend(["c", "a"], [hs[0][:2], hs[1][:1]], k=1)  # each session now also saw these
    seen = {"a": set(hs[0]) | set(hs[1][:1]), "b": set(hs[1]), "c": set(hs[2]) | set(hs[0][:2])}
    k = model.n_items_ - max(len(v) for v in seen.values())
    ids, _ = model.recommend(["a", "b", "c"], [[], [], []], k=k, exclude_seen=True)
    everything = set(model.item_ids_)
    for row, s in enumerate("abc"):
        assert set(ids[row]) <= everything - seen[s]
    full = model.recommend(["a", "b", "c"], [[], [], []], k=model.n_items_, exclude_seen=True)[1]
    for row, s in enumerate("abc"):
        assert np.isneginf(full[row]).sum() == len(seen[s])  # only the session's own items are removed


def test_unknown_items_are_ignored_and_never_raise(fresh):
    model, k = fresh, 6
    history = histories(model, 5, 1, 4)[0]
    noisy = [history[0], "not-an-item", history[1], 10 ** 9, history[2], -1, history[3], str(history[3])]
    with_unknown = model.recommend(["n"], [noisy], k=k, exclude_seen=True)
    without = model.recommend(["p"], [history], k=k, exclude_seen=True)
    assert_same_topk((with_unknown[0][0], with_unknown[1][0]), (without[0][0], without[1][0]))
    # only unknown items: the session stays at the zero state
    only_unknown = model.recommend(["q"], ["nope"], k=k)
    assert_same_topk((only_unknown[0][0], only_unknown[1][0]), replay(model, [], k))
    # an unknown item after known ones keeps the state
    model.recommend(["r"], [history], k=k)
    kept = model.recommend(["r"], [[None, "nope"]], k=k)
    assert_same_topk((kept[0][0], kept[1][0]), replay(model, history, k))


def test_string_item_ids(string_model):
    model, k = string_model, 5
    assert all(isinstance(i, str) for i in model.item_ids_)
    history = ["item_1", "item_4", "item_0"]
    model.recommend(["s1"], [history[0]], k=k)
    ids, scores = model.recommend(["s1"], [history[1:]], k=k)
    assert all(isinstance(i, str) for i in ids[0])
    predicted = stepped_scores(model, history)
    best = predicted.sort_values(ascending=False, kind="stable")[:k]
    assert_same_topk((ids[0], scores[0]), (best.index.to_numpy(), best.to_numpy()))
    # an int or an unknown string is simply unknown here
    model.recommend(["s2"], [[1, "item_1", "zzz"]], k=k)
    again = model.recommend(["s3"], [["item_1"]], k=k)
    kept = model.recommend(["s2"], [[]], k=k)
    assert_same_topk((kept[0][0], kept[1][0]), (again[0][0], again[1][0]))
    model.end_sessions()


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("k", [0, -1, N_ITEMS + 1, 2.5, True, "5", None])
def test_invalid_k_raises(fresh, k):
    with pytest.raises(ValueError, match=r"k=.* is invalid: expected an int in \[1, n_items_="):
        fresh.recommend(["a"], [fresh.item_ids_[0]], k=k)
    assert "a" not in fresh.live_sessions()  # nothing was fed


def test_k_bounds_are_inclusive(fresh):
    assert fresh.recommend(["a"], [[]], k=1)[0].shape == (1, 1)
    ids, _ = fresh.recommend(["a"], [[]], k=np.int64(fresh.n_items_))
    assert sorted(ids[0]) == sorted(fresh.item_ids_)


@pytest.mark.parametrize("sessions, items", [
    (["a", "b"], [1]),  # lengths differ
    (["a", "a"], [1, 2]),  # duplicated session
])
def test_bad_sessions_raise(fresh, sessions, items):
    with pytest.raises(ValueError, match="one entry of item_ids per session and distinct session_ids"):
        fresh.recommend(sessions, items)


@pytest.mark.parametrize("call, match", [
    (dict(session_ids="s1", item_ids=[3, 4]), "session_ids must be a list.*got str 's1'"),  # not sessions 's', '1'
    (dict(session_ids=["x"], item_ids=5), "item_ids must be a list.*got int 5"),
    (dict(session_ids=["x"], item_ids=[5], exclude_seen="no"), "exclude_seen must be True or False"),
])
def test_arguments_of_the_wrong_kind_raise_type_errors(fresh, call, match):
    item = fresh.item_ids_[0]
    call = {**call, "item_ids": [item, item] if call["item_ids"] == [3, 4] else
            [item] if isinstance(call["item_ids"], list) else call["item_ids"]}
    with pytest.raises(TypeError, match=match):
        fresh.recommend(**call)


def test_unfitted_model_raises():
    model = gru4rec.GRU4Rec()
    with pytest.raises(gru4rec.NotFittedError, match="not fitted yet"):
        model.recommend(["a"], [1])
    with pytest.raises(gru4rec.NotFittedError, match="not fitted yet"):
        model.predict_next_batch([1], [1], batch=1)


# ---------------------------------------------------------------- predict_next_batch
def test_predict_next_batch_slots_keep_or_reset_state(model):
    """A slot keeps its state while its session id is unchanged and restarts when it changes."""
    h1, h2 = histories(model, 6, 2, 3)
    a, b, c = next(_TOKENS), next(_TOKENS), next(_TOKENS)
    model.predict_next_batch([a, b], [h1[0], h2[0]], batch=2)
    model.predict_next_batch([a, b], [h1[1], h2[1]], batch=2)
    both = model.predict_next_batch([a, c], [h1[2], h2[2]], batch=2)  # slot 1 starts session c
    np.testing.assert_allclose(both[0], stepped_scores(model, h1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both[1], stepped_scores(model, h2[2:]), rtol=1e-5, atol=1e-6)


def test_predict_next_batch_subset_and_errors(model):
    items = model.item_ids_[[5, 0, 9]]
    sid = next(_TOKENS)
    full = model.predict_next_batch([sid], [items[0]], batch=1)
    subset = model.predict_next_batch([next(_TOKENS)], [items[0]], predict_for_item_ids=items, batch=1)
    assert list(subset.index) == list(items)
    np.testing.assert_allclose(subset[0], full.loc[items, 0], rtol=1e-6)  # elementwise final_act
    with pytest.raises(ValueError, match="item ids are unknown to the model"):
        model.predict_next_batch([sid], ["nope"], batch=1)
    with pytest.raises(ValueError, match="item ids are unknown to the model"):
        model.predict_next_batch([sid], [items[0]], predict_for_item_ids=["nope"], batch=1)
    with pytest.raises(ValueError, match="need length batch=2"):
        model.predict_next_batch([sid], [items[0]], batch=2)
    with pytest.raises(ValueError, match=r"batch=2.0 is invalid: expected a positive int"):
        model.predict_next_batch([sid, 9], items[:2], batch=2.0)
    with pytest.raises(TypeError, match="input_item_ids must be a list, array or Series of length batch=1"):
        model.predict_next_batch([sid], items[0], batch=1)
    as_float = model.predict_next_batch([next(_TOKENS)], [items[0]], predict_for_item_ids=[float(items[1])], batch=1)
    assert as_float.index.tolist() == [items[1]]  # the model's own id, not the float given for it
    with pytest.raises(ValueError, match=r"1 item ids are unknown.*another type .* int ids, e.g. True"):
        model.predict_next_batch([sid], [items[0]], predict_for_item_ids=[items[0], True], batch=1)


def test_predict_next_batch_looks_each_id_up_as_itself(string_model):
    """['item_3', 4] is not ['item_3', '4'] (which np.asarray would make of it)."""
    known = string_model.item_ids_[:2].tolist()
    with pytest.raises(ValueError, match=r"1 item ids are unknown.*another type than the model's str ids, e.g. 4"):
        string_model.predict_next_batch(["a", "b"], [known[0], 4], batch=2)
    with pytest.raises(ValueError, match=r"1 item ids are unknown"):
        string_model.predict_next_batch(["a"], [known[0]], predict_for_item_ids=[known[1], 6], batch=1)
