"""Sequence-aware mode (issue 8): truncated BPTT, user sequences, evaluation that continues the state.

The BPTT steps are re-computed in float64 numpy with finite-difference gradients through the
window (tests/numpy_reference.py); the continued evaluation is compared with a replay of each
user's history and test events through `predict_next_batch`.
"""
import numpy as np
import numpy_reference as ref
import pandas as pd
import pytest
from state_capture import initial_state

import evaluation
import gru4rec
from gru4rec_lib import sessiondata
from gru4rec_lib import synthetic

COMMON = dict(show_progress=False, seed=3, n_epochs=1)


def _state(model):
    return model.state_dict()


# ---------------------------------------------------------------- BPTT against numpy
# Two slots, four steps, all active. Slot 0: session 1 (a h a), then session 3 (b c e), so its
# windows from step 2 on hold steps of session 1 behind a reset (h is fed nowhere else: a reset
# must keep its input row untouched); slot 1: session 2 (c a b a d), whose window repeats item a.
# Session 4 (g) has one event: g is never fed nor a target.
A, B, C, D, E, G, H = 20, 21, 22, 23, 24, 25, 26
BPTT_DATA = pd.DataFrame({
    "SessionId": [1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 4],
    "ItemId": [A, H, A, C, A, B, A, D, B, C, E, G],
    "Time": [0.0, 1, 2, 0.5, 1.5, 2.5, 3.5, 4.5, 0.7, 1.7, 2.7, 9],
})
SLOT_INPUTS = [[A, H, B, C], [C, A, B, A]]  # per slot, steps 0..3
SLOT_TARGETS = [[H, A, C, E], [A, B, A, D]]
SLOT_RESETS = [[True, False, True, False], [True, False, False, False]]

BPTT_CONFIGS = {
    "shared_xe_logq_momentum_2layers_T3": dict(
        loss="cross-entropy", final_act="softmax", layers=(4, 3), constrained_embedding=True, logq=1.0,
        sample_alpha=0.5, momentum=0.4, learning_rate=0.1, n_sample=4, steps_per_call=2, bptt=3),
    "separate_bprmax_l2_rmsprop_T2": dict(
        loss="bpr-max", final_act="elu-1", layers=(4,), embedding=3, bpreg=0.5, lmbd=0.05, adapt="rmsprop",
        learning_rate=0.05, n_sample=4, sample_alpha=1.0, steps_per_call=1, bptt=2),
    "onehot_xe_logit_T4": dict(
        loss="xe_logit", final_act="softmax_logit", layers=(5,), embedding=0, learning_rate=0.2, n_sample=0,
        steps_per_call=3, bptt=4),
}


@pytest.fixture(scope="module", params=list(BPTT_CONFIGS))
def bptt_run(request):
    params = dict(BPTT_CONFIGS[request.param], batch_size=2, sample_store=1000)
    init = initial_state(BPTT_DATA, **COMMON, **params)
    model = gru4rec.GRU4Rec(**{**COMMON, **params}).fit(BPTT_DATA)
    return request.param, params, model, init


def _reference_bptt(params, model, init):
    """Four BPTT(T, 1) steps in numpy from the model's initial state."""
    cfg, T = model.config(), params["bptt"]
    weights = {n: init[n].astype(np.float64) for n in init if "/" not in n and n != "step"}  # the weights
    opt = {k: np.zeros(init[k].shape) for k in init if "/" in k}
    idx = model.item_map_.indices
    log_support = np.log(np.maximum(np.bincount(idx(BPTT_DATA.ItemId.to_numpy()), minlength=model.n_items_), 1))
    ref_cfg = dict(mode=cfg.mode, n_layers=len(cfg.layers), loss=cfg.loss, final_act=cfg.final_act, logq=cfg.logq,
                   sample_alpha=cfg.sample_alpha, bpreg=cfg.bpreg, lmbd=cfg.lmbd, learning_rate=cfg.learning_rate,
                   momentum=cfg.momentum, adapt=cfg.adapt, adapt_params=cfg.adapt_params)
    store = np.asarray(model._store_var.get_value(borrow=True))
    inputs = np.array([idx(s) for s in SLOT_INPUTS]).T  # (steps, slots)
    targets = np.array([idx(s) for s in SLOT_TARGETS]).T
    resets = np.array(SLOT_RESETS).T
    # the window before step 0 is padding: item index 0, reset, not real
    pad = T - 1
    inputs = np.concatenate([np.zeros((pad, 2), int), inputs])
    resets = np.concatenate([np.ones((pad, 2), bool), resets])
    real = np.concatenate([np.zeros((pad, 2), bool), np.ones((4, 2), bool)])
    start = [np.zeros((2, h)) for h in cfg.layers]
    for step in range(4):
        rows = slice(step, step + T)
        window = list(zip(inputs[rows], resets[rows]))
        cut = np.array([resets[step + j + 1: step + T].any(axis=0) for j in range(T)])  # a later reset
        reached = real[rows] & ~cut
        negatives = store[step] if params["n_sample"] else np.zeros(0, int)
        start = ref.train_step_bptt(weights, opt, ref_cfg, window, inputs[rows][reached], start, targets[step],
                                    negatives, log_support, 2)
    return weights, opt


def test_bptt_steps_match_numpy_finite_differences(bptt_run):
    name, params, model, init = bptt_run
    weights, opt = _reference_bptt(params, model, init)
    got = _state(model)
    assert float(got["step"]) == 4.0
    for key in [*weights, *opt]:
        want = weights[key] if key in weights else opt[key]
        atol = 1e-7 if key.startswith("acc/") else 5e-6
        np.testing.assert_allclose(got[key], want, rtol=1e-4, atol=atol, err_msg=f"{name}: {key}")


def test_bptt_reaches_back_beyond_one_step(bptt_run):
    """The reference with the window cut to one step gives different weights: the test can tell."""
    name, params, model, init = bptt_run
    weights, _ = _reference_bptt(dict(params, bptt=1), model, init)
    got = _state(model)
    dense = [n for n in weights if n.startswith("Wh_")]
    assert any(not np.allclose(got[n], weights[n], rtol=1e-4, atol=5e-6) for n in dense)


@pytest.mark.slow
def test_bptt_cut_by_resets_is_bptt_1():
    """Sessions of two events: every window is cut by a reset, so bptt=3 trains as bptt=1."""
    rng = np.random.default_rng(0)
    data = pd.DataFrame({"SessionId": np.repeat(np.arange(200), 2), "ItemId": rng.integers(0, 30, 400),
                         "Time": np.arange(400.0)})
    params = dict(COMMON, layers=(8,), n_sample=8, batch_size=8, constrained_embedding=True, momentum=0.3)
    one = _state(gru4rec.GRU4Rec(**params, bptt=1).fit(data))
    three = _state(gru4rec.GRU4Rec(**params, bptt=3).fit(data))
    assert one.keys() == three.keys()
    for key in one:
        np.testing.assert_allclose(three[key], one[key], rtol=1e-6, atol=1e-7, err_msg=key)


@pytest.mark.slow  # a fresh process or a whole benchmark run: in the slow set
def test_bptt_with_dropout_learns_planted_successors():
    """Dropout masks are kept per window step (carried through scan); training still works."""
    train, test = synthetic.split_by_time(synthetic.generate_sessions(n_sessions=1500, n_items=60, seed=2))
    model = gru4rec.GRU4Rec(**dict(COMMON, n_epochs=2), layers=(24,), n_sample=16, batch_size=16, bptt=3,
                            dropout_p_hidden=0.2, dropout_p_embed=0.1, embedding=12, steps_per_call=4).fit(train)
    assert np.all(np.isfinite(model.epoch_losses_)) and model.epoch_losses_[1] < model.epoch_losses_[0]
    pop = evaluation.evaluate(_popularity(train), test, cutoffs=5)["recall"][5]
    assert evaluation.evaluate(model, test, cutoffs=5)["recall"][5] > pop + 0.2


def _popularity(train):
    from gru4rec_lib import baselines
    return baselines.Pop().fit(train)


# ---------------------------------------------------------------- user sequences
def user_events(n_users=40, seed=0):
    """Users with a taste (one block of 8 items) over 3 sessions of 2-5 events; time = order."""
    rng = np.random.default_rng(seed)
    rows, t = [], 0
    for user in range(n_users):
        block = rng.integers(0, 6)
        for session in range(3):
            for _ in range(rng.integers(2, 6)):
                rows.append((f"u{user}", user * 10 + session, int(block * 8 + rng.integers(0, 8)), t))
                t += 1
    return pd.DataFrame(rows, columns=["UserId", "SessionId", "ItemId", "Time"])


@pytest.mark.slow
def test_one_session_per_user_equals_the_session_model_exactly():
    data = synthetic.generate_sessions(n_sessions=300, n_items=40, seed=1)
    params = dict(COMMON, layers=(8,), n_sample=8, batch_size=8, dropout_p_hidden=0.2)
    sessions = _state(gru4rec.GRU4Rec(**params).fit(data))
    as_users = _state(gru4rec.GRU4Rec(**params, user_key="User").fit(data.assign(User=data.SessionId)))
    for key in sessions:
        np.testing.assert_array_equal(as_users[key], sessions[key], err_msg=key)


def test_user_sequences_join_sessions_and_breaks_mark_them():
    events = pd.DataFrame({"UserId": ["x", "x", "y", "x", "x"], "SessionId": [2, 1, 3, 1, 2],
                           "ItemId": [7, 5, 6, 6, 5], "Time": [3, 0, 0, 1, 2]})
    reader = sessiondata.SequenceReader("SessionId", user_key="UserId", reset_between_sessions=True)
    data = reader.group(reader.load(events), sessiondata.ItemMap([5, 6, 7]))
    assert data.session_ids.tolist() == ["x", "y"] and data.offsets.tolist() == [0, 4, 5]
    assert data.item_idx.tolist() == [0, 1, 0, 2, 1] and data.breaks.tolist() == [False, False, True, False, False]
    (chunk,) = sessiondata.session_parallel_schedule(data, [0, 1], 1, 3)
    assert chunk.inputs[:, 0].tolist() == [0, 1, 0] and chunk.targets[:, 0].tolist() == [1, 0, 2]
    assert chunk.reset[:, 0].tolist() == [True, False, True]  # the session change zeroes the state
    reader = sessiondata.SequenceReader("SessionId", user_key="UserId")  # no resets: no session column
    assert (reader.sequence_key, reader.break_key) == ("UserId", None)
    assert list(reader.load(events.drop(columns="SessionId")).columns) == ["UserId", "ItemId", "Time"]


def _replay_ranks(model, history, test, by_session):
    """Rank of every next test event by replaying each user through predict_next_batch (batch 1)."""
    known = set(model.item_ids_)
    ranks = []
    for user, events in test.groupby("UserId", sort=True):
        past = history[history.UserId == user].sort_values("Time", kind="stable")
        past = past[past.ItemId.isin(known)]
        future = events.sort_values("Time", kind="stable")
        future = future[future.ItemId.isin(known)]
        seq = pd.concat([past, future])
        key = seq.SessionId.to_numpy() if by_session else np.full(len(seq), user)
        key = [f"{user}/{k}" for k in key]  # a new user never continues the previous user's state
        for i in range(len(seq) - 1):
            scores = model.predict_next_batch([key[i]], [seq.ItemId.iloc[i]], batch=1)[0]
            if i >= len(past) - 1:  # the target is a test event
                target = seq.ItemId.iloc[i + 1]
                ranks.append((user, i - len(past), 1 + int((scores > scores[target]).sum())))
    return pd.DataFrame(ranks, columns=["UserId", "position", "rank"])


@pytest.mark.parametrize("spanning", [False, True], ids=["history_ends_a_session", "history_starts_a_session"])
@pytest.mark.parametrize("reset", [False, True], ids=["continuing", "reset_between_sessions"])
@pytest.mark.slow
def test_continued_evaluation_equals_replaying_the_history(reset, spanning):
    """`spanning`: the last session's first event is the history's last (split_user_histories(last=N)
    often cuts a session so): with resets it starts from zero, not from the session before it."""
    events = user_events()
    last = events.groupby("UserId").SessionId.transform("max")
    in_history = events.SessionId < last
    if spanning:
        in_history |= ~events.duplicated(["UserId", "SessionId"]) & (events.SessionId == last)
    history, test = events[in_history], events[~in_history].copy()
    history = history[~history.UserId.isin(["u1"])]  # u1: no history, starts from zero
    history = history[~((history.UserId == "u2") & (history.index != history[history.UserId == "u2"].index[0]))]
    test.loc[test.index[:2], "ItemId"] = 999  # unknown to the model: dropped
    model = gru4rec.GRU4Rec(**COMMON, layers=(6, 5), n_sample=6, batch_size=4, user_key="UserId",
                            reset_between_sessions=reset, final_act="elu-1").fit(history)
    got = evaluation.evaluate(model, test, cutoffs=(1, 5), history=history, return_ranks=True, batch_size=3,
                              steps_per_call=2)
    want = _replay_ranks(model, history, test, by_session=reset)
    merged = got["ranks"].merge(want, on=["UserId", "position"], suffixes=("", "_replay"), validate="1:1")
    assert len(merged) == len(want) == got["n_points"]
    np.testing.assert_array_equal(merged["rank"], merged["rank_replay"])
    assert (got["ranks"].position == -1).sum() == test.UserId.nunique() - 1  # all but u1 continue
    assert got["recall"][5] == pytest.approx((want["rank"] <= 5).mean())


@pytest.mark.slow
def test_continuing_the_state_changes_the_ranks_of_the_same_targets():
    events = user_events(n_users=120, seed=4)
    last = events.groupby("UserId").SessionId.transform("max")
    history, test = events[events.SessionId < last], events[events.SessionId == last]
    model = gru4rec.GRU4Rec(**dict(COMMON, n_epochs=3), layers=(16,), n_sample=16, batch_size=8,
                            user_key="UserId").fit(history)
    zero = evaluation.evaluate(model, test, return_ranks=True)["ranks"]
    cont = evaluation.evaluate(model, test, history=history, return_ranks=True)["ranks"]
    same = zero.merge(cont[cont.position >= 0], on=["UserId", "position"], validate="1:1")
    assert len(same) == len(zero) and not np.array_equal(same.rank_x, same.rank_y)


@pytest.mark.slow
def test_history_of_other_users_changes_nothing():
    events = user_events(n_users=30, seed=5)
    last = events.groupby("UserId").SessionId.transform("max")
    history, test = events[events.SessionId < last], events[events.SessionId == last]
    model = gru4rec.GRU4Rec(**COMMON, layers=(6,), n_sample=4, batch_size=4, user_key="UserId").fit(history)
    users = sorted(test.UserId.unique())
    test, others = test[test.UserId.isin(users[:15])], history[history.UserId.isin(users[15:])]
    with_others, alone = evaluation.evaluate(model, test, history=others), evaluation.evaluate(model, test)
    for key in ("recall", "mrr", "n_points", "n_dropped"):
        assert with_others[key] == alone[key], key


# ---------------------------------------------------------------- errors and persistence
@pytest.mark.parametrize("params, message", [
    (dict(bptt=0), "bptt=0 is invalid"),
    (dict(bptt=2.0), "bptt=2.0 is invalid"),
    (dict(reset_between_sessions=True), "False unless user_key is set"),
    (dict(user_key=3), "user_key=3 is invalid"),
    (dict(session_key=None), "session_key=None is invalid"),
    (dict(user_key="UserId", reset_between_sessions=True, session_key=None), "session_key=None is invalid"),
])
def test_bad_sequence_parameters_are_named(params, message):
    with pytest.raises(ValueError, match=message):
        gru4rec.GRU4Rec(**params).fit(user_events(n_users=3))


def test_missing_user_column_and_history_without_user_mode_are_named():
    data = user_events(n_users=5)
    with pytest.raises(KeyError, match="column 'User' not found; pass user_key="):
        gru4rec.GRU4Rec(**COMMON, layers=(4,), n_sample=2, user_key="User").fit(data)
    model = gru4rec.GRU4Rec(**COMMON, layers=(4,), n_sample=2, batch_size=2).fit(data)
    with pytest.raises(ValueError, match="history continues users' hidden states"):
        evaluation.evaluate(model, data, history=data)


@pytest.mark.slow
def test_user_mode_without_session_column_saves_and_loads(tmp_path):
    data = user_events(n_users=20).drop(columns="SessionId")
    model = gru4rec.GRU4Rec(**COMMON, layers=(6,), n_sample=4, batch_size=4, user_key="UserId", bptt=2,
                            session_key=None).fit(data)
    loaded = gru4rec.GRU4Rec.load(model.save(tmp_path / "m.npz"))
    assert (loaded.user_key, loaded.bptt, loaded.session_key) == ("UserId", 2, None)
    a = evaluation.evaluate(model, data, history=data)
    b = evaluation.evaluate(loaded, data, history=data)
    assert a["recall"] == b["recall"] and a["n_points"] == len(data)  # every event is a target


@pytest.mark.slow  # a fresh process or a whole benchmark run: in the slow set
def test_sequence_benchmark_tiny_run(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "sequence.py"
    spec = importlib.util.spec_from_file_location("bench_sequence", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "seq.json"
    bench.main(["--users", "150", "--items", "60", "--epochs", "1", "--layers", "8", "--bptt", "2", "--json", str(out)])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table[1:]] == ["| sessions", "| users, bptt=2", "| users, reset between sessions"]
    rows = json.loads(out.read_text())["rows"]
    assert "continued/all" not in rows[0]
    for row in rows[1:]:  # every test user has a history: one more point per user when continued
        assert row["continued/all"]["n"] == row["continued/next"]["n"] + 150
        assert row["continued/next"]["n"] == row["zero/next"]["n"] == rows[0]["zero/next"]["n"]
