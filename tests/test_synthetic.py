"""Tests for synthetic: determinism, planted structure, lengths, time order and split_by_time."""
import numpy as np
import pandas as pd
import pytest

from gru4rec_lib.synthetic import generate_sessions, planted_successors, split_by_time, successor_probabilities


def test_same_seed_same_frame_and_no_global_rng():
    state = np.random.get_state()[1].copy()
    first = generate_sessions(n_sessions=300, n_items=40, seed=7)
    pd.testing.assert_frame_equal(first, generate_sessions(n_sessions=300, n_items=40, seed=7))
    assert not first.equals(generate_sessions(n_sessions=300, n_items=40, seed=8))
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_columns_lengths_and_times():
    events = generate_sessions(n_sessions=4000, n_items=50, mean_length=6.0, seed=1)
    assert list(events.columns) == ["SessionId", "ItemId", "Time"]
    assert events["SessionId"].dtype == np.int64 and events["ItemId"].dtype == np.int64
    assert events["Time"].dtype == np.float64
    lengths = events.groupby("SessionId").size()
    assert len(lengths) == 4000 and lengths.min() == 1
    assert 0.12 < (lengths == 1).mean() < 0.22  # geometric: P(length 1) = 1 / mean_length
    assert abs(lengths.mean() - 6.0) < 0.3
    assert (events["SessionId"].diff().dropna() >= 0).all()
    within = events.groupby("SessionId")["Time"].diff().dropna()
    assert (within > 0).all()
    starts = events.groupby("SessionId")["Time"].min()
    assert (np.diff(starts.to_numpy()) > 0).all()
    assert events["ItemId"].between(0, 49).all()


def test_planted_successor_is_most_frequent_follower():
    events = generate_sessions(n_sessions=6000, n_items=40, noise=0.1, seed=3)
    table = planted_successors(n_items=40, n_successors=3, seed=3)
    items, sessions = events["ItemId"].to_numpy(), events["SessionId"].to_numpy()
    same = sessions[1:] == sessions[:-1]
    pairs = pd.DataFrame({"cur": items[:-1][same], "nxt": items[1:][same]})
    counts = pairs.groupby("cur")["nxt"].value_counts().unstack(fill_value=0)
    frequent = counts.sum(axis=1) >= 100
    assert frequent.sum() >= 15
    top = counts[frequent].idxmax(axis=1)
    np.testing.assert_array_equal(top.to_numpy(), table[top.index.to_numpy(), 0])
    in_table = (table[pairs["cur"]] == pairs["nxt"].to_numpy()[:, None]).any(axis=1)
    assert in_table.mean() > 0.9  # 1 - noise, plus noise draws that hit a successor


def test_popularity_skew_of_first_items():
    events = generate_sessions(n_sessions=5000, n_items=100, popularity_exponent=1.0, seed=2)
    first = events.groupby("SessionId")["ItemId"].first()
    share = first.value_counts(normalize=True)
    expected = 1 / np.arange(1, 101)
    assert share.index[0] == 0
    assert abs(share[0] - expected[0] / expected.sum()) < 0.03  # about 0.19


def test_successor_table_properties():
    table = planted_successors(n_items=30, n_successors=4, seed=5)
    assert table.shape == (30, 4) and table.dtype == np.int64
    assert (table != np.arange(30)[:, None]).all()
    assert all(len(set(row)) == 4 for row in table.tolist())
    np.testing.assert_array_equal(table, planted_successors(n_items=30, n_successors=4, seed=5))
    assert planted_successors(n_items=4, n_successors=3, popularity_exponent=3.0).shape == (4, 3)
    np.testing.assert_allclose(successor_probabilities(3), [4 / 7, 2 / 7, 1 / 7])


def test_string_ids():
    events = generate_sessions(n_sessions=50, n_items=20, string_ids=True, seed=4)
    numeric = generate_sessions(n_sessions=50, n_items=20, seed=4)
    assert events["ItemId"].tolist() == [f"item_{i}" for i in numeric["ItemId"]]
    table = planted_successors(n_items=20, string_ids=True, seed=4)
    assert table[0, 0] == f"item_{planted_successors(n_items=20, seed=4)[0, 0]}"


@pytest.mark.parametrize("kwargs,match", [
    ({"n_items": 1}, "n_items must be at least 2"),
    ({"n_items": 3, "n_successors": 3}, r"n_successors must be in 1\.\.n_items-1 = 2, got 3"),
    ({"noise": 1.5}, r"noise must be in \[0, 1\], got 1.5"),
    ({"mean_length": 0.5}, "mean_length must be at least 1"),
    ({"n_sessions": 0}, "n_sessions must be at least 1"),
    ({"popularity_exponent": -1}, "popularity_exponent must be >= 0"),
])
def test_bad_generator_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_sessions(**kwargs)


def test_split_by_time():
    events = generate_sessions(n_sessions=500, n_items=30, seed=6).sample(frac=1.0, random_state=0)
    before = events.copy(deep=True)
    train, test = split_by_time(events, test_fraction=0.1)
    pd.testing.assert_frame_equal(events, before)
    assert train["SessionId"].nunique() == 450 and test["SessionId"].nunique() == 50
    assert not set(train["SessionId"]) & set(test["SessionId"])
    assert len(train) + len(test) == len(events)
    train_starts = train.groupby("SessionId")["Time"].min()
    test_starts = test.groupby("SessionId")["Time"].min()
    assert test_starts.min() > train_starts.max()
    in_train = events.index.isin(train.index)
    assert train.index.tolist() == events.index[in_train].tolist()  # input row order kept


def test_split_by_time_errors():
    events = generate_sessions(n_sessions=3, seed=0)
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got 1.0"):
        split_by_time(events, test_fraction=1.0)
    with pytest.raises(KeyError, match="column 'Start' not found; pass time_key="):
        split_by_time(events, time_key="Start")
    with pytest.raises(ValueError, match="cannot split 1 sessions"):
        split_by_time(events[events["SessionId"] == 0])


# ---------------------------------------------------------------- user histories
def test_user_histories_have_sessions_in_order_and_a_taste():
    from gru4rec_lib.synthetic import generate_user_histories, split_last_sessions
    events = generate_user_histories(n_users=300, n_items=200, sessions_per_user=4, n_topics=10, taste=0.5, seed=3)
    assert list(events.columns) == ["UserId", "SessionId", "ItemId", "Time"]
    assert (events.groupby("UserId").SessionId.nunique() == 4).all()
    assert events.groupby("SessionId").UserId.nunique().max() == 1
    by_user = events.sort_values(["UserId", "Time"], kind="stable")
    assert (by_user.groupby("UserId").SessionId.diff().dropna() >= 0).all()  # sessions follow each other
    # a user's favourite topics cover far more of their events than the 2/10 a uniform draw would
    topic = events.ItemId % 10
    top2 = topic.groupby(events.UserId).value_counts(normalize=True).groupby(level=0).head(2).groupby(level=0).sum()
    assert top2.mean() > 0.55
    assert generate_user_histories(n_users=20, n_items=50, seed=1).equals(generate_user_histories(n_users=20, n_items=50, seed=1))
    history, test = split_last_sessions(events)
    assert len(history) + len(test) == len(events)
    assert (test.groupby("UserId").SessionId.nunique() == 1).all() and test.UserId.nunique() == 300
    last_history = history.groupby("UserId").Time.max()
    assert (test.groupby("UserId").Time.min() > last_history.reindex(test.UserId.unique()).to_numpy()).all()
    with pytest.raises(KeyError, match="column 'User' not found; pass user_key="):
        split_last_sessions(events, user_key="User")
    with pytest.raises(ValueError, match="taste must be in"):
        generate_user_histories(taste=1.5)
