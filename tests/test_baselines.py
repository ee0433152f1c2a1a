"""Tests for baselines: hand-computed toy examples, brute-force references, slot state, errors."""
import ast
import inspect
import math
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from gru4rec_lib.baselines import (VSKNN, ItemKNN, MarkovChain, NotFittedError, Pop, SessionPop, SKNN)
from gru4rec_lib.sessiondata import ItemMap, SessionData, load_events, session_parallel_schedule

ALL_MODELS = [Pop, SessionPop, ItemKNN, MarkovChain, SKNN, VSKNN]

# Five sessions; start times 1, 4, 7, 9, 12 (s1 oldest). Rows deliberately not in time order.
TOY_SESSIONS = {1: "ABC", 2: "BCD", 3: "AC", 4: "CDD", 5: "E"}
TOY_START = {1: 1, 2: 4, 3: 7, 4: 9, 5: 12}
# Events per item: A 2, B 2, C 4, D 3, E 1 -> popularity levels (dense rank) E 0, A 1, B 1, D 2,
# C 3; n_levels = 4. Sessions containing: A 2, B 2, C 4, D 2, E 1.
LEVEL = {"A": 1, "B": 1, "C": 3, "D": 2, "E": 0}
R3, R6 = math.sqrt(3), math.sqrt(6)


def frame(sessions, start):
    """Events DataFrame of the given sessions, rows in reverse order."""
    rows = [(sid, item, start[sid] + pos) for sid, items in sessions.items()
            for pos, item in enumerate(items)]
    return pd.DataFrame(rows[::-1], columns=["SessionId", "ItemId", "Time"])


@pytest.fixture
def toy():
    return frame(TOY_SESSIONS, TOY_START)


def run_alone(model, items):
    """Feed one session (item ids) through slot 0 of a B=1 pass; return each step's scores."""
    model.reset_state()
    index = ItemMap(model.item_ids_).indices(list(items))
    return [model.score_step([pos == 0], [idx], [True])[0] for pos, idx in enumerate(index)]


def last_scores(model, items):
    """{item id: score} after feeding the session ``items``."""
    return dict(zip(model.item_ids_, run_alone(model, items)[-1].tolist()))


def assert_scores(actual, expected):
    assert set(actual) == set(expected)
    for item, value in expected.items():
        assert actual[item] == pytest.approx(value, rel=1e-5, abs=1e-6), item


# ---- hand-computed toy examples ---------------------------------------------------------------

def test_pop_counts_training_events(toy):
    assert_scores(last_scores(Pop().fit(toy), "DA"), {"A": 2, "B": 2, "C": 4, "D": 3, "E": 1})


def test_session_pop_orders_session_counts_then_popularity(toy):
    model = SessionPop().fit(toy)
    # score = count * 4 + level: after D: D 1*4+2; after D, A, D: D 2*4+2, A 1*4+1.
    assert_scores(last_scores(model, "D"), {"A": 1, "B": 1, "C": 3, "D": 6, "E": 0})
    scores = last_scores(model, "DAD")
    assert_scores(scores, {"A": 5, "B": 1, "C": 3, "D": 10, "E": 0})
    assert sorted(scores, key=scores.get, reverse=True)[:3] == ["D", "A", "C"]


def test_item_knn_similarity_row_of_last_item(toy):
    model = ItemKNN(lmbd=1.0, alpha=0.25, pop_tiebreak=False).fit(toy)
    # n_B = 2; n_BA = 1 (s1), n_BC = 2 (s1, s2), n_BD = 1 (s2); (n + 1)^0.25 * (n' + 1)^0.75.
    expected = {"A": 1 / 3, "B": 0, "C": 2 / (3 ** 0.25 * 5 ** 0.75), "D": 1 / 3, "E": 0}
    assert_scores(last_scores(model, "CB"), expected)  # only the last item counts
    tiebreak = last_scores(model.set_params(pop_tiebreak=True).fit(toy), "B")
    assert_scores(tiebreak, {**expected, "B": 1 - 4, "E": 0 - 4})  # level - n_levels


def test_item_knn_without_regularisation_is_cosine(toy):
    model = ItemKNN(lmbd=0, alpha=0.5, pop_tiebreak=False).fit(toy)
    # n_C = 4; n_CA = 2 (s1, s3), n_CB = 2 (s1, s2), n_CD = 2 (s2, s4), each with n = 2.
    c = 2 / math.sqrt(4 * 2)
    assert_scores(last_scores(model, "C"), {"A": c, "B": c, "C": 0, "D": c, "E": 0})


def test_markov_chain_counts_transitions_within_sessions(toy):
    # Transitions: A->B, B->C (s1); B->C, C->D (s2); A->C (s3); C->D, D->D (s4). The session
    # boundaries s1->s2 (C->B) and s3->s4 (C->C) must not count.
    raw = MarkovChain(pop_tiebreak=False).fit(toy)
    assert_scores(last_scores(raw, "A"), {"A": 0, "B": 1, "C": 1, "D": 0, "E": 0})
    assert_scores(last_scores(raw, "C"), {"A": 0, "B": 0, "C": 0, "D": 2, "E": 0})
    assert_scores(last_scores(raw, "D"), {"A": 0, "B": 0, "C": 0, "D": 1, "E": 0})
    tiebreak = MarkovChain().fit(toy)  # count * 4 + level: the B/C tie goes to the popular C
    assert_scores(last_scores(tiebreak, "A"), {"A": 1, "B": 5, "C": 7, "D": 2, "E": 0})


def test_sknn_cosine_sampling_and_k(toy):
    # X = {A, B}: s1 {A,B,C} cos 2/sqrt(2*3); s2 {B,C,D} 1/sqrt(6); s3 {A,C} 1/sqrt(2*2).
    full = SKNN(pop_tiebreak=False).fit(toy)
    s1, s2, s3 = 2 / R6, 1 / R6, 0.5
    expected = {"A": s1 + s3, "B": s1 + s2, "C": s1 + s2 + s3, "D": s2, "E": 0}
    assert_scores(last_scores(full, "AB"), expected)
    # sample_size=2 keeps the two most recent candidates s3, s2 and drops the most similar s1.
    sampled = SKNN(sample_size=2, pop_tiebreak=False).fit(toy)
    assert_scores(last_scores(sampled, "AB"), {"A": s3, "B": s2, "C": s2 + s3, "D": s2, "E": 0})
    nearest = SKNN(k=1).fit(toy)  # only s1; unscored D, E by popularity below 0
    assert_scores(last_scores(nearest, "AB"), {"A": s1, "B": s1, "C": s1, "D": -2, "E": -4})


def test_sknn_similarity_ties_go_to_the_more_recent_session(toy):
    # X = {B}: s1 and s2 both have cosine 1/sqrt(3); k=1 keeps s2 (start 4 > 1).
    model = SKNN(k=1, pop_tiebreak=False).fit(toy)
    assert_scores(last_scores(model, "B"), {"A": 0, "B": 1 / R3, "C": 1 / R3, "D": 1 / R3, "E": 0})


def test_sknn_jaccard(toy):
    # X = {A, B}: s1 2/3, s2 1/|{A,B,C,D}| = 1/4, s3 1/|{A,B,C}| = 1/3.
    model = SKNN(similarity="jaccard", pop_tiebreak=False).fit(toy)
    expected = {"A": 2 / 3 + 1 / 3, "B": 2 / 3 + 1 / 4, "C": 2 / 3 + 1 / 4 + 1 / 3, "D": 1 / 4,
                "E": 0}
    assert_scores(last_scores(model, "AB"), expected)


def test_vsknn_linear_decay(toy):
    model = VSKNN(pop_tiebreak=False).fit(toy)
    # [A, B]: w_A = 1/2, w_B = 1, ||w|| = sqrt(1.25).
    norm = math.sqrt(1.25)
    s1, s2, s3 = 1.5 / (norm * R3), 1 / (norm * R3), 0.5 / (norm * math.sqrt(2))
    expected = {"A": s1 + s3, "B": s1 + s2, "C": s1 + s2 + s3, "D": s2, "E": 0}
    assert_scores(last_scores(model, "AB"), expected)
    # [A, B, A]: an item weighs by its last occurrence: w_A = 3/3, w_B = 2/3.
    norm = math.sqrt(1 + 4 / 9)
    s1, s2, s3 = (5 / 3) / (norm * R3), (2 / 3) / (norm * R3), 1 / (norm * math.sqrt(2))
    expected = {"A": s1 + s3, "B": s1 + s2, "C": s1 + s2 + s3, "D": s2, "E": 0}
    assert_scores(last_scores(model, "ABA"), expected)


@pytest.mark.parametrize("weighting, w_a", [("quadratic", 0.25), ("log", 1 / math.log2(3))])
def test_vsknn_other_decays(toy, weighting, w_a):
    model = VSKNN(weighting=weighting, pop_tiebreak=False).fit(toy)
    norm = math.sqrt(w_a ** 2 + 1)  # [A, B]: w_B = 1
    s1, s2, s3 = (w_a + 1) / (norm * R3), 1 / (norm * R3), w_a / (norm * math.sqrt(2))
    expected = {"A": s1 + s3, "B": s1 + s2, "C": s1 + s2 + s3, "D": s2, "E": 0}
    assert_scores(last_scores(model, "AB"), expected)


def test_vsknn_weighted_jaccard(toy):
    # [A, B] linear: sum(w) = 1.5; O / (|s| + 1.5 - O): s1 1.5/3, s2 1/3.5, s3 0.5/3.
    model = VSKNN(similarity="jaccard", pop_tiebreak=False).fit(toy)
    s1, s2, s3 = 0.5, 1 / 3.5, 0.5 / 3
    expected = {"A": s1 + s3, "B": s1 + s2, "C": s1 + s2 + s3, "D": s2, "E": 0}
    assert_scores(last_scores(model, "AB"), expected)


# ---- brute-force references on random sessions ------------------------------------------------

def random_sessions(n_sessions, n_items, seed):
    """{session id: item ids} with Zipf-like popularity and repeats, plus distinct start times."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1)
    popularity /= popularity.sum()
    sessions = {sid: [f"i{x}" for x in rng.choice(n_items, rng.integers(1, 9), p=popularity)]
                for sid in range(n_sessions)}
    start = dict(zip(range(n_sessions), rng.permutation(n_sessions) * 100.0))
    return sessions, start


def brute_item_knn(train, last, items, lmbd, alpha):
    sets = [set(s) for s in train]
    n = Counter(i for s in sets for i in s)
    return {j: 0.0 if j == last else sum(last in s and j in s for s in sets)
            / ((n[last] + lmbd) ** alpha * (n[j] + lmbd) ** (1 - alpha)) for j in items}


def brute_markov(train, last, items):
    counts = Counter((a, b) for s in train for a, b in zip(s[:-1], s[1:]))
    return {j: float(counts[last, j]) for j in items}


def brute_sknn(train, start, prefix, items, k, sample_size, weight):
    """Cosine SKNN/VSKNN by loops over training sessions; ``weight(p, n)`` for position p of n."""
    w = {item: weight(p, len(prefix)) for p, item in enumerate(prefix, 1)}  # last occurrence wins
    norm = math.sqrt(sum(v * v for v in w.values()))
    shared = [sid for sid, s in train.items() if set(s) & set(w)]
    recent = sorted(shared, key=lambda sid: start[sid], reverse=True)[:sample_size]
    sims = {}
    for sid in recent:
        items_s = set(train[sid])
        sims[sid] = sum(w.get(i, 0.0) for i in items_s) / (norm * math.sqrt(len(items_s)))
    # equal similarities (to rounding: sums taken in another order) go to the more recent session
    neighbours = sorted(recent, key=lambda sid: (round(sims[sid], 9), start[sid]), reverse=True)[:k]
    return {j: sum(sims[sid] for sid in neighbours if j in train[sid]) for j in items}


@pytest.fixture(scope="module")
def random_data():
    train, start = random_sessions(300, 30, seed=1)
    test, _ = random_sessions(12, 30, seed=2)
    return train, start, frame(train, start), [s for s in test.values() if len(s) > 1]


def linear(p, n):
    return p / n


@pytest.mark.parametrize("model, reference", [
    (ItemKNN(lmbd=3.0, alpha=0.3, pop_tiebreak=False),
     lambda tr, st, prefix, items: brute_item_knn(tr.values(), prefix[-1], items, 3.0, 0.3)),
    (MarkovChain(pop_tiebreak=False),
     lambda tr, st, prefix, items: brute_markov(tr.values(), prefix[-1], items)),
    (SKNN(k=7, sample_size=25, pop_tiebreak=False),
     lambda tr, st, prefix, items: brute_sknn(tr, st, prefix, items, 7, 25, lambda p, n: 1.0)),
    (SKNN(k=7, sample_size=None, pop_tiebreak=False),
     lambda tr, st, prefix, items: brute_sknn(tr, st, prefix, items, 7, None, lambda p, n: 1.0)),
    (VSKNN(k=7, sample_size=25, pop_tiebreak=False),
     lambda tr, st, prefix, items: brute_sknn(tr, st, prefix, items, 7, 25, linear)),
])
def test_matches_brute_force_on_random_sessions(random_data, model, reference):
    train, start, events, test = random_data
    model.fit(events)
    known = set(model.item_ids_)
    for session in test:
        session = [i for i in session if i in known]
        for t, row in enumerate(run_alone(model, session)):
            expected = reference(train, start, session[:t + 1], known)
            assert_scores(dict(zip(model.item_ids_, row.tolist())), expected)


def test_pop_tiebreak_ranks_unscored_items_by_popularity(random_data):
    _, _, events, test = random_data
    support = events["ItemId"].value_counts()
    for cls in (ItemKNN, SKNN, VSKNN):
        raw, tiebreak = cls(pop_tiebreak=False).fit(events), cls().fit(events)
        for a, b in zip(run_alone(raw, test[0]), run_alone(tiebreak, test[0])):
            scored = a > 0
            np.testing.assert_array_equal(b[scored], a[scored])  # evidence is kept as it is
            assert (b[~scored] < 0).all()
            pop = support[raw.item_ids_[~scored]].to_numpy()
            assert (np.sign(b[~scored][:, None] - b[~scored]) == np.sign(pop[:, None] - pop)).all()


@pytest.mark.parametrize("cls", [SessionPop, MarkovChain])
def test_count_models_order_by_count_then_popularity(random_data, cls):
    train, _, events, test = random_data
    support = events["ItemId"].value_counts()
    model = cls().fit(events)
    ids = list(model.item_ids_)
    pop = support[ids].to_numpy()
    transitions = Counter((a, b) for s in train.values() for a, b in zip(s[:-1], s[1:]))
    for t, row in enumerate(run_alone(model, test[0])):
        prefix = test[0][:t + 1]
        if cls is SessionPop:
            count = np.array([prefix.count(i) for i in ids])
        else:
            count = np.array([transitions[prefix[-1], i] for i in ids])
        # sign of (count, popularity) compared lexicographically, for every pair of items
        order = np.sign(count[:, None] - count) * 2 + np.sign(pop[:, None] - pop)
        assert (np.sign(row[:, None] - row) == np.sign(order)).all()


# ---- slot state -------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", ALL_MODELS)
def test_interleaved_slots_equal_sessions_alone(random_data, cls):
    _, _, events, test = random_data
    model = cls(k=3, sample_size=10) if cls in (SKNN, VSKNN) else cls()
    model.fit(events)
    twin = cls(**model.get_params()).fit(events)  # runs each session alone
    item_map = ItemMap(model.item_ids_)
    sessions = SessionData.from_events(load_events(frame(dict(enumerate(test)), {
        s: 0 for s in range(len(test))})), item_map)
    model.reset_state()
    checked = 0
    for chunk in session_parallel_schedule(sessions, np.arange(sessions.n_sessions), 3, 1):
        scores = model.score_step(chunk.reset[0], chunk.inputs[0], chunk.active[0])
        for slot in np.flatnonzero(chunk.active[0]):
            session, pos = chunk.session[0, slot], chunk.position[0, slot]
            alone = run_alone(twin, test[session][:pos + 1])[-1]
            np.testing.assert_array_equal(scores[slot], alone)
            checked += 1
        assert (scores[~chunk.active[0]] == 0).all()
    assert checked == sum(len(s) - 1 for s in test)


@pytest.mark.parametrize("cls", ALL_MODELS)
def test_reset_forgets_and_inactive_slots_keep_their_state(toy, cls):
    model = cls().fit(toy)
    index = dict(zip(model.item_ids_, range(model.n_items_)))
    fresh = run_alone(model, "C")[-1]
    model.reset_state()
    model.score_step([True, True], [index["A"], index["D"]], [True, True])
    model.score_step([False, False], [index["B"], index["E"]], [True, False])  # slot 1 paused
    scores = model.score_step([True, False], [index["C"], index["B"]], [True, True])
    np.testing.assert_array_equal(scores[0], fresh)  # slot 0 forgot A, B
    np.testing.assert_array_equal(scores[1], run_alone(model, "DB")[-1])  # E was never added


@pytest.mark.parametrize("cls", ALL_MODELS)
def test_first_call_and_reset_state_start_every_slot_afresh(toy, cls):
    model = cls().fit(toy)
    fresh = run_alone(model, "C")[-1]
    c = ItemMap(model.item_ids_).indices(["C"])[0]
    model.reset_state()
    np.testing.assert_array_equal(model.score_step([False], [c], [True])[0], fresh)
    model.score_step([False], [c], [True])
    model.reset_state()
    np.testing.assert_array_equal(model.score_step([False], [c], [True])[0], fresh)


def test_scores_are_float32_and_deterministic(toy):
    for cls in ALL_MODELS:
        first, second = cls().fit(toy), cls().fit(toy)
        a, b = run_alone(first, "ABC"), run_alone(second, "ABC")
        assert a[0].dtype == np.float32 and a[0].shape == (5,)
        np.testing.assert_array_equal(np.array(a), np.array(b))


# ---- data, parameters and errors --------------------------------------------------------------

def test_fit_leaves_the_dataframe_alone_and_reads_files(toy, tmp_path):
    before = toy.copy(deep=True)
    from_frame = SKNN().fit(toy)
    pd.testing.assert_frame_equal(toy, before)
    path = tmp_path / "events.tsv"
    toy.rename(columns={"ItemId": "item"}).to_csv(path, sep="\t", index=False)
    from_file = SKNN(item_key="item").fit(path)
    assert from_file.n_items_ == 5 and sorted(from_file.item_ids_) == list("ABCDE")
    assert_scores(last_scores(from_file, "AB"), last_scores(from_frame, "AB"))


@pytest.mark.parametrize("cls, params, name", [
    (ItemKNN, {"lmbd": -1}, "lmbd"), (ItemKNN, {"alpha": 1.5}, "alpha"),
    (ItemKNN, {"alpha": "0.5"}, "alpha"), (ItemKNN, {"pop_tiebreak": 1}, "pop_tiebreak"),
    (MarkovChain, {"pop_tiebreak": "yes"}, "pop_tiebreak"), (SKNN, {"k": 0}, "k"),
    (SKNN, {"k": 2.5}, "k"), (SKNN, {"sample_size": 0}, "sample_size"),
    (SKNN, {"similarity": "euclid"}, "similarity"), (VSKNN, {"weighting": "exp"}, "weighting"),
    (VSKNN, {"k": True}, "k"),
])
def test_bad_parameters_raise_at_fit(toy, cls, params, name):
    model = cls(**params)  # the constructor stores, it does not check
    assert model.get_params()[name] == params[name]
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        model.fit(toy)


def test_parameters_are_checked_before_the_data():
    with pytest.raises(ValueError, match="^k must be"):
        SKNN(k=-1).fit("no/such/file.tsv")


@pytest.mark.parametrize("cls", ALL_MODELS)
def test_scoring_before_fit_raises(cls):
    with pytest.raises(NotFittedError, match="call fit first"):
        cls().score_step([True], [0], [True])
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)


def test_bad_step_arguments(toy):
    model = MarkovChain().fit(toy)
    with pytest.raises(ValueError, match=r"out of range \[0, 5\) in slots \[1\]"):
        model.score_step([True, True], [0, 5], [True, True])
    model.score_step([True, True], [0, 5], [True, False])  # inactive slots are not checked
    with pytest.raises(ValueError, match="one length B"):
        model.score_step([True, True], [0], [True, True])
    with pytest.raises(TypeError, match="integer item indices"):
        model.score_step([True], [0.0], [True])
    model.reset_state()
    model.score_step([True, True], [0, 1], [True, True])
    with pytest.raises(ValueError, match="batch size changed from 2 to 1; call reset_state"):
        model.score_step([True], [0], [True])


def test_set_params_rejects_unknown_names():
    model = SKNN()
    assert model.set_params(k=5) is model and model.k == 5
    with pytest.raises(ValueError, match="unknown parameter 'n_neighbours' for SKNN"):
        model.set_params(n_neighbours=5)


@pytest.mark.parametrize("cls", ALL_MODELS)
def test_documented_defaults_match_the_signature(cls):
    defaults = {name: p.default for name, p in inspect.signature(cls).parameters.items()}
    doc = inspect.getdoc(cls)
    documented = {}
    for names, values in re.findall(r"^(\w+(?:, \w+)*) : [^\n]*?default (.+)$", doc, re.M):
        documented.update(zip(names.split(", "), ast.literal_eval(f"({values},)")))
    assert set(documented) == set(defaults)
    assert all(defaults[name] == value for name, value in documented.items())


# ---- larger generated data --------------------------------------------------------------------

def test_planted_transitions_are_found_on_larger_data():
    """~40k events, 400 items; the next item is mostly (item + 1) % 400. Recall@10 per model."""
    rng = np.random.default_rng(3)
    n_items, rows = 400, []
    for session in range(6000):
        item = int(rng.integers(n_items))
        for pos in range(int(rng.integers(2, 12))):
            rows.append((session, item, pos))
            item = (item + 1) % n_items if rng.random() < 0.8 else int(rng.integers(n_items))
    events = pd.DataFrame(rows, columns=["SessionId", "ItemId", "Time"])
    train, test = events[events.SessionId < 5800], events[events.SessionId >= 5800]
    # best possible Recall@10 ~ 0.8 + 0.2 * 10 / 400; popularity knows nothing of the pattern
    bounds = {MarkovChain: (0.78, 0.83), ItemKNN: (0.78, 0.83), SKNN: (0.6, 0.83),
              VSKNN: (0.7, 0.83), SessionPop: (0.0, 0.05), Pop: (0.0, 0.05)}
    for cls, (low, high) in bounds.items():
        model = cls().fit(train)
        data = SessionData.from_events(load_events(test), ItemMap(model.item_ids_),
                                       drop_unknown=True)
        hits = total = 0
        for chunk in session_parallel_schedule(data, np.arange(data.n_sessions), 64, 1):
            scores = model.score_step(chunk.reset[0], chunk.inputs[0], chunk.active[0])
            assert np.isfinite(scores).all()
            rows = np.flatnonzero(chunk.active[0])
            target = scores[rows, chunk.targets[0, rows]]
            hits += ((scores[rows] > target[:, None]).sum(axis=1) < 10).sum()
            total += len(rows)
        assert total > 1000 and low <= hits / total <= high, (cls.__name__, hits / total)


def test_pickled_training_file_needs_allow_pickle(toy, tmp_path):
    path = tmp_path / "events.pkl"
    toy.to_pickle(path)
    with pytest.raises(ValueError, match="allow_pickle"):
        Pop().fit(path)
    assert Pop().fit(path, allow_pickle=True).n_items_ == Pop().fit(toy).n_items_
