"""Tests for splits: user-history splits (last N events or a time cut) with sessions from time gaps."""
import numpy as np
import pandas as pd
import pytest

from gru4rec_lib import splits


def _log(seed=0, n_users=30, max_events=40):
    """A shuffled log: users with 1..max_events events, times with gaps and same-second ties."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        n = int(rng.integers(1, max_events + 1))
        steps = rng.choice([0, 5, 60, 5000, 100000], size=n, p=[0.2, 0.3, 0.3, 0.1, 0.1])
        times = 1_000_000 + np.cumsum(steps)
        rows += [(user * 7 % 31, int(rng.integers(100)), float(rng.integers(1, 6)), int(t)) for t in times]
    frame = pd.DataFrame(rows, columns=["UserId", "ItemId", "Rating", "Time"])
    return frame.sample(frac=1.0, random_state=seed)  # file order is not time order


def _time_order(frame):
    """(user, time)-sorted copy keeping the frame's order among equal times."""
    return frame.sort_values(["UserId", "Time"], kind="stable")


def test_last_n_test_events_are_each_users_latest_and_not_in_history():
    events = _log()
    history, test = splits.split_user_histories(events, last=5, session_gap=1000)
    ordered = _time_order(events)
    for user, group in ordered.groupby("UserId"):
        if len(group) >= 6:
            expected = group.index[-5:]
            np.testing.assert_array_equal(test.index[test.UserId == user], expected)
            np.testing.assert_array_equal(history.index[history.UserId == user], group.index[:-5])
        else:
            assert (test.UserId != user).all()
    assert not set(test.index) & set(history.index)  # no test event is also a history event
    assert len(history) + len(test) == len(events)
    last_history = history.groupby("UserId").Time.max()
    first_test = test.groupby("UserId").Time.min()
    assert (first_test >= last_history.reindex(first_test.index)).all()


def test_order_of_events_is_kept_and_ties_keep_file_order():
    events = pd.DataFrame({"UserId": [1, 1, 1, 1, 1, 2, 2, 2], "ItemId": [30, 10, 20, 40, 50, 1, 2, 3],
                           "Time": [5, 5, 5, 1, 9, 3, 2, 1]})
    history, test = splits.split_user_histories(events, last=2, session_gap=100)
    assert history.ItemId.tolist() == [40, 30, 10, 3]  # user 1 by time, equal times in file order
    assert test.ItemId.tolist() == [20, 50, 2, 1]
    both = pd.concat([history, test]).sort_values(["UserId", "Time"], kind="stable")
    assert (both.groupby("UserId").Time.diff().dropna() >= 0).all()


def test_too_few_events_go_to_history_whole_and_min_history():
    events = pd.DataFrame({"UserId": [1, 1, 1, 2, 2, 2, 2], "ItemId": [1, 2, 3, 4, 5, 6, 7],
                           "Time": [1, 2, 3, 1, 2, 3, 4]})
    history, test = splits.split_user_histories(events, last=3, session_gap=10)
    assert history.UserId.tolist() == [1, 1, 1, 2] and test.UserId.tolist() == [2, 2, 2]
    history, test = splits.split_user_histories(events, last=3, session_gap=10, min_history=2)
    assert len(test) == 0 and len(history) == 7


def test_sessions_come_from_gaps():
    events = pd.DataFrame({"UserId": [1, 1, 1, 1, 2, 2], "ItemId": [1, 2, 3, 4, 5, 6],
                           "Time": [0, 100, 250, 251, 100, 101]})
    out = splits.sessions_from_gaps(events, session_gap=100)
    assert out.SessionId.tolist() == [0, 0, 1, 1, 2, 2]  # a gap longer than 100 starts a session
    assert out.SessionId.dtype == np.int64
    history, test = splits.split_user_histories(events, last=1, session_gap=100)
    assert history.SessionId.tolist() == [0, 0, 1, 2] and test.SessionId.tolist() == [1, 2]


def test_session_ids_unique_per_user_and_gap_rule_on_random_log():
    events = _log(seed=3)
    out = splits.sessions_from_gaps(events, session_gap=1000)
    assert out.groupby("SessionId").UserId.nunique().max() == 1
    ordered = out.sort_values(["UserId", "Time"], kind="stable")
    same_user = ordered.UserId.to_numpy()[1:] == ordered.UserId.to_numpy()[:-1]
    new_session = ordered.SessionId.to_numpy()[1:] != ordered.SessionId.to_numpy()[:-1]
    gap = np.diff(ordered.Time.to_numpy()) > 1000
    np.testing.assert_array_equal(new_session[same_user], gap[same_user])


def test_time_cut():
    events = pd.DataFrame({"UserId": [1, 1, 1, 2, 2, 3], "ItemId": [1, 2, 3, 4, 5, 6],
                           "Time": [1, 5, 9, 6, 7, 2]})
    history, test = splits.split_user_histories(events, cut_time=5, session_gap=10)
    assert history.ItemId.tolist() == [1, 6] and test.ItemId.tolist() == [2, 3]  # user 2: no history: dropped
    assert (history.Time < 5).all() and (test.Time >= 5).all()


def test_deterministic_and_callers_frame_unchanged():
    events = _log(seed=5)
    before = events.copy(deep=True)
    first = splits.split_user_histories(events, last=4, session_gap=1000)
    second = splits.split_user_histories(events, last=4, session_gap=1000)
    pd.testing.assert_frame_equal(events, before)
    for a, b in zip(first, second):
        pd.testing.assert_frame_equal(a, b)
    assert list(first[0].columns) == ["UserId", "ItemId", "Rating", "Time", "SessionId"]


def test_validation_carved_from_history_keeps_its_sessions():
    events = _log(seed=7)
    history, test = splits.split_user_histories(events, last=3, session_gap=1000)
    train, valid = splits.split_user_histories(history, last=3)  # session_gap None: keep the sessions
    assert set(train.index) | set(valid.index) == set(history.index)
    pd.testing.assert_series_equal(pd.concat([train, valid]).SessionId.sort_index(),
                                   history.SessionId.sort_index())
    assert not set(valid.index) & set(test.index)


@pytest.mark.parametrize("kwargs, match", [
    (dict(session_gap=10), "exactly one of last"),
    (dict(last=2, cut_time=3, session_gap=10), "exactly one of last"),
    (dict(last=0, session_gap=10), "last=0"),
    (dict(last=2, session_gap=-1), "session_gap=-1"),
    (dict(last=2, session_gap=float("nan")), "session_gap=nan"),
    (dict(last=2, session_gap=10, min_history=-1), "min_history=-1"),
    (dict(last=2), "session_gap"),  # no SessionId column and no gap
])
def test_bad_arguments(kwargs, match):
    events = pd.DataFrame({"UserId": [1, 1, 1], "ItemId": [1, 2, 3], "Time": [1, 2, 3]})
    with pytest.raises(ValueError, match=match):
        splits.split_user_histories(events, **kwargs)


def test_bad_columns():
    events = pd.DataFrame({"UserId": [1, 1], "ItemId": [1, 2], "Time": ["a", "b"]})
    with pytest.raises(ValueError, match="numeric"):
        splits.split_user_histories(events, last=1, session_gap=10)
    with pytest.raises(KeyError, match="user_key"):
        splits.split_user_histories(events.rename(columns={"UserId": "u"}), last=1, session_gap=10)
    with pytest.raises(ValueError, match="missing"):
        splits.split_user_histories(events.assign(Time=[1.0, np.nan]), last=1, session_gap=10)


def test_command_line_writes_the_split(tmp_path):
    events = _log(seed=9)
    source = tmp_path / "ratings.tsv"
    events.to_csv(source, sep="\t", index=False)
    out = tmp_path / "out"
    splits.main([str(source), str(out), "--last", "4", "--session-gap", "1000", "--validation-last", "4"])
    history, test = splits.split_user_histories(events, last=4, session_gap=1000)
    train, valid = splits.split_user_histories(history, last=4)
    for name, frame in (("history", history), ("test", test), ("valid_train", train), ("valid", valid)):
        written = pd.read_csv(out / f"{name}.tsv", sep="\t")
        pd.testing.assert_frame_equal(written, frame.reset_index(drop=True), check_dtype=False)


def test_command_line_writes_ids_as_they_were(tmp_path):
    source = tmp_path / "ratings.tsv"
    rows = [f"{user}\t{item}\t{t}" for t, (user, item) in enumerate(
        [("u01", "007"), ("u01", "7"), ("u01", "07"), ("1", "008"), ("1", "8"), ("1", "0008")])]
    source.write_text("UserId\tItemId\tTime\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    splits.main([str(source), str(out), "--last", "1", "--session-gap", "1000"])
    written = pd.concat([pd.read_csv(out / f"{name}.tsv", sep="\t", dtype=str) for name in ("history", "test")])
    assert sorted(written["ItemId"]) == sorted(["007", "7", "07", "008", "8", "0008"])
    assert sorted(set(written["UserId"])) == ["1", "u01"]
