"""bench/movielens.py on a small generated log: each test event's rank is the rank of that event,
checked against a second, independent way of scoring it (the real benchmark is not a test)."""

import numpy as np
import pandas as pd
import pytest

import evaluation
import gru4rec
from gru4rec_lib import baselines, synthetic
from scripts import load_script



@pytest.fixture(scope="module")
def bench():
    return load_script("bench/movielens.py", "bench_movielens")


@pytest.fixture(scope="module")
def split(bench, tmp_path_factory):
    events = synthetic.generate_user_histories(n_users=60, n_items=40, sessions_per_user=4, seed=3)
    events = events.drop(columns="SessionId")
    events["Time"] = np.floor(events.Time / 20) * 20  # some events share a time stamp
    folder = tmp_path_factory.mktemp("ml")
    events.to_csv(folder / "ratings.tsv", sep="\t", index=False)
    grouplens = events.rename(columns={"UserId": "userId", "ItemId": "movieId", "Time": "timestamp"})
    grouplens.to_csv(folder / "ratings.csv", index=False)  # the file as GroupLens distributes it
    parts = bench.load_split(folder / "ratings.tsv", last=4, session_gap=1000)
    for mine, theirs in zip(parts, bench.load_split(folder / "ratings.csv", last=4, session_gap=1000)):
        pd.testing.assert_frame_equal(mine, theirs)
    return parts


def test_split_marks_session_starts_and_ties(split):
    history, test, _, _ = split
    first_of_session = ~test.SessionId.isin(history.SessionId) & ~test.SessionId.duplicated()
    np.testing.assert_array_equal(test.start.to_numpy(), first_of_session.to_numpy())
    assert test.start.any() and (~test.start).any() and test.tied.any() and (~test.tied).any()


def test_session_ranks_match_two_event_sessions(bench, split):
    """MarkovChain scores depend on the previous item only: rank each target from a 2-event session."""
    history, test, _, _ = split
    model = baselines.MarkovChain().fit(history)
    ranks = bench.target_ranks(model, history, test)
    assert np.isnan(ranks[test.start.to_numpy()]).all() and not np.isnan(ranks[~test.start.to_numpy()]).any()
    seen = pd.concat([history, test.drop(columns=["start", "tied"])]).sort_values(["UserId", "Time"], kind="stable")
    previous = seen.groupby("SessionId", sort=False).ItemId.shift().reindex(test.index)
    nxt = test[~test.start]
    pairs = pd.DataFrame({"SessionId": np.repeat(np.arange(len(nxt)), 2), "Time": np.tile([0, 1], len(nxt)),
                          "ItemId": np.column_stack([previous[nxt.index], nxt.ItemId]).ravel().astype(int)})
    expected = evaluation.evaluate(model, pairs, return_ranks=True)["ranks"].sort_values("SessionId")["rank"]
    np.testing.assert_array_equal(ranks[~test.start.to_numpy()], expected.to_numpy())


@pytest.mark.slow
def test_user_ranks_match_evaluating_the_whole_log_from_zero(bench, split):
    """A continued user model ranks test event j as the zero-state evaluation of the user's full log does."""
    history, test, _, _ = split
    model = gru4rec.GRU4Rec(loss="cross-entropy", final_act="softmax", layers=(8,), n_epochs=1, n_sample=8,
                            batch_size=8, user_key="UserId", show_progress=False, seed=1).fit(history)
    ranks = bench.target_ranks(model, history, test)
    assert not np.isnan(ranks).any()
    full = pd.concat([history, test.drop(columns=["start", "tied"])]).sort_values(["UserId", "Time"], kind="stable")
    whole = evaluation.evaluate(model, full, return_ranks=True)["ranks"]
    index = full.groupby("UserId", sort=False).cumcount()
    rank_of = dict(zip(zip(whole.UserId, whole.position + 1), whole["rank"]))
    expected = [rank_of[(u, i)] for u, i in zip(test.UserId, index[test.index])]
    assert np.mean(ranks == np.asarray(expected)) > 0.97  # float32 paths may break a rare near-tie


def test_metrics_parts(bench, split):
    _, test, _, _ = split
    ranks = np.where(test.start, np.nan, 3.0)
    out = bench.metrics(ranks, test)
    assert set(out) == {"next", "untied"} and out["next"]["recall@5"] == 1.0 and out["next"]["recall@1"] == 0.0
    assert out["next"]["mrr@20"] == pytest.approx(1 / 3) and out["next"]["n"] == int((~test.start).sum())
    assert bench.metrics(np.full(len(test), 30.0), test)["all"]["recall@20"] == 0.0
