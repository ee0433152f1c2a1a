"""The rows of docs/conformance.md that the training-step tests do not cover on their own.

Each test checks numbers of gru4rec against a float64 numpy re-derivation of the authors' formula
(tests/numpy_reference.py): one optimiser update per optimiser, with L2 (lmbd) and momentum, on a
whole parameter and on item rows that occur several times; the gradient cap's norm; adadelta's
learning rate; the epoch loss; retraining's new rows; the `tiebreaking` evaluation mode.
"""
import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
import pytest
from state_capture import initial_state, retrain_start_state

import evaluation
import gru4rec
import numpy_reference as ref
from gru4rec_lib import optim, synthetic

ADAPTS = ["adagrad", "rmsprop", "adadelta", "adam", None]
CONSTS = {"adagrad": {"epsilon": 1e-6}, "rmsprop": {"decay": 0.8, "epsilon": 1e-6},
          "adadelta": {"decay": 0.95, "epsilon": 1e-6}, "adam": {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-6},
          None: {}}


def _opt(adapt, momentum, lmbd=0.03, lr=0.05):
    cfg = SimpleNamespace(adapt=adapt, adapt_consts=CONSTS[adapt], learning_rate=lr, momentum=momentum, lmbd=lmbd)
    return optim.Optimizer.from_config(cfg)


def _ref_cfg(adapt, momentum, lmbd=0.03, lr=0.05):
    return dict(adapt=adapt, adapt_params=CONSTS[adapt], momentum=momentum, lmbd=lmbd, learning_rate=lr)


def _state_values(opt, name, shape, sparse, rng):
    """Non-zero optimiser state (accumulators >= 0, Adam's counts whole numbers)."""
    values = {}
    for key in opt.state_keys(name, sparse):
        if key.startswith("count/"):
            values[key] = rng.integers(1, 4, size=shape[:1]).astype(float)
        elif key.startswith("velocity/") or key.startswith("m/"):
            values[key] = rng.normal(0, 0.1, size=shape)
        else:
            values[key] = np.abs(rng.normal(0, 0.1, size=shape))
    return values


def _ref_update(adapt, cfg, param, grad, state, name, rows, t):
    """The authors' update of `rows` of `param` in numpy (in place on copies), via numpy_reference."""
    c = {**ref.DEFAULTS.get(adapt, {}), **cfg["adapt_params"]}
    opt = {k: v.copy() for k, v in state.items()}
    p, g = param[rows], grad[rows]
    d = ref.direction(adapt, c, g, opt, name, rows, t)
    lr = 1.0 if adapt == "adadelta" else cfg["learning_rate"]
    step = -lr * (d + cfg["lmbd"] * p)
    if cfg["momentum"]:
        opt[f"velocity/{name}"][rows] = cfg["momentum"] * opt[f"velocity/{name}"][rows] + step
        step = opt[f"velocity/{name}"][rows]
    new = param.copy()
    new[rows] = p + step
    return new, opt


# ---------------------------------------------------------------- one optimiser update
@pytest.mark.parametrize("momentum", [0.0, 0.4])
@pytest.mark.parametrize("adapt", ADAPTS)
def test_dense_update_is_the_authors_formula(adapt, momentum):
    """p -= lr (d + lmbd p), d the optimiser's direction; momentum on that step; Adam at step t."""
    rng = np.random.default_rng(1)
    opt = _opt(adapt, momentum)
    shape = (3, 4)
    param, grad = rng.normal(size=shape), rng.normal(size=shape)
    state = _state_values(opt, "W", shape, False, rng)
    p_var, g_var, t_var = pt.dmatrix("p"), pt.dmatrix("g"), pt.dscalar("t")
    s_vars = {k: pt.dmatrix(k) for k in state}
    out = optim.dense_update(opt, "W", p_var, g_var, s_vars, t_var)
    fn = pytensor.function([p_var, g_var, t_var, *s_vars.values()], [out[k] for k in ["W", *state]],
                           mode="FAST_COMPILE", on_unused_input="ignore")
    got = fn(param, grad, 3.0, *state.values())
    want_p, want_state = _ref_update(adapt, _ref_cfg(adapt, momentum), param, grad, state, "W",
                                     np.ones(3, bool), 3.0)
    for key, value in zip(["W", *state], got):
        want = want_p if key == "W" else want_state[key]
        np.testing.assert_allclose(value, want, rtol=2e-6, atol=1e-6, err_msg=key)  # float32 constants


def _rows_path(opt, f_var, i_var, t_var, g_var, s_vars):
    summed, share = optim.coalesce(i_var, g_var, t_var)
    old, new = optim.row_values(opt, i_var, f_var[i_var], summed, s_vars)
    return optim.rows_update("E", f_var, i_var, old, new, share, s_vars, pt.as_tensor_variable(np.array(True)))


def _matrix_path(opt, f_var, i_var, t_var, g_var, s_vars):
    values, mask = optim.matrix_update(opt, "E", f_var, i_var, g_var, t_var, s_vars)
    return optim.matrix_write("E", f_var, values, mask, s_vars)


def _written_path(opt, f_var, i_var, t_var, g_var, s_vars):
    """The whole-matrix update as unguarded steps write it: masked and settled state by state."""
    written = pt.as_tensor_variable(np.array(True))
    return optim.matrix_update(opt, "E", f_var, i_var, g_var, t_var, s_vars, written=written)[0]


@pytest.mark.parametrize("path", [_rows_path, _matrix_path, _written_path], ids=["rows", "matrix", "written"])
@pytest.mark.parametrize("momentum", [0.0, 0.4])
@pytest.mark.parametrize("adapt", ADAPTS)
def test_rows_occurring_twice_take_one_step_on_their_summed_gradient(adapt, momentum, path):
    """Occurrences [1, 3, 1, 4], the last one untouched (an idle slot): row 1 steps once on g0 + g2,
    row 3 on g1; rows 0, 2 and 4 and their state do not change; Adam's count of row 1 grows by one.
    Both ways of writing an item matrix (`item_update`): by its touched rows, and whole."""
    rng = np.random.default_rng(2)
    opt = _opt(adapt, momentum)
    full, state = rng.normal(size=(5, 3)), _state_values(opt, "E", (5, 3), True, rng)
    idx, touched = np.array([1, 3, 1, 4], np.int32), np.array([True, True, True, False])
    occ_grad = rng.normal(size=(4, 3))
    occ_grad[3] = 0.0
    i_var, t_var = pt.tensor("idx", dtype="int32", shape=(4,)), pt.vector("touched", dtype="bool")
    g_var, f_var = pt.tensor("g", dtype="float64", shape=(4, 3)), pt.dmatrix("E")
    s_vars = {k: (pt.dvector(k) if k.startswith("count/") else pt.dmatrix(k)) for k in state}
    out = path(opt, f_var, i_var, t_var, g_var, s_vars)
    keys = ["E", *state]
    fn = pytensor.function([f_var, i_var, t_var, g_var, *s_vars.values()], [out[k] for k in keys],
                           mode="FAST_COMPILE", on_unused_input="ignore")
    got = dict(zip(keys, fn(full, idx, touched, occ_grad, *state.values())))
    grad = np.zeros_like(full)
    np.add.at(grad, idx[touched], occ_grad[touched])
    rows = np.zeros(5, bool)
    rows[[1, 3]] = True
    counts = state.get("count/E", np.zeros(5)).copy()
    counts[rows] += 1
    t = ref.expand_rows(counts[rows], grad[rows])
    ref_state = {k: v.copy() for k, v in state.items() if not k.startswith("count/")}
    want_p, want_state = _ref_update(adapt, _ref_cfg(adapt, momentum), full, grad, ref_state, "E", rows, t)
    want_state["count/E"] = counts
    for key in keys:
        want = want_p if key == "E" else want_state[key]
        np.testing.assert_allclose(got[key], want, rtol=2e-6, atol=1e-6, err_msg=key)
        np.testing.assert_array_equal(got[key][[0, 2, 4]], (full if key == "E" else state[key])[[0, 2, 4]])


@pytest.mark.parametrize("adapt", ADAPTS)
def test_a_step_not_written_changes_no_row(adapt):
    """`written` false (a padding step): every array keeps its values, touched rows included."""
    rng = np.random.default_rng(5)
    opt = _opt(adapt, 0.4)
    full, state = rng.normal(size=(5, 3)), _state_values(opt, "E", (5, 3), True, rng)
    f_var = pt.dmatrix("E")
    s_vars = {k: (pt.dvector(k) if k.startswith("count/") else pt.dmatrix(k)) for k in state}
    idx = pt.as_tensor_variable(np.array([1, 3], np.int32))
    grad, touched = pt.as_tensor_variable(rng.normal(size=(2, 3))), pt.as_tensor_variable(np.ones(2, bool))
    not_written = pt.as_tensor_variable(np.array(False))
    out = optim.matrix_update(opt, "E", f_var, idx, grad, touched, s_vars, written=not_written)[0]
    keys = ["E", *state]
    fn = pytensor.function([f_var, *s_vars.values()], [out[k] for k in keys], mode="FAST_COMPILE")
    for key, value in zip(keys, fn(full, *state.values())):
        np.testing.assert_array_equal(value, full if key == "E" else state[key], err_msg=key)


def test_grad_cap_norm_runs_over_occurrences_before_the_l2_term():
    """norm^2 = sum of the dense gradients^2 + sum over occurrences of row gradients^2 (not of the
    summed rows', and without lmbd p); every gradient is scaled by cap / norm when norm >= cap."""
    rng = np.random.default_rng(3)
    opt = optim.Optimizer(None, {}, 0.1, 0.0, 0.5)  # SGD, lmbd 0.5
    dense, dense_g = rng.normal(size=(2, 2)), rng.normal(size=(2, 2))
    full, idx = rng.normal(size=(4, 2)), np.array([2, 2, 0], np.int32)
    occ_g = rng.normal(size=(3, 2))
    occ_norm2 = np.sum(dense_g ** 2) + np.sum(occ_g ** 2)
    summed = occ_g[0] + occ_g[1]
    summed_norm2 = np.sum(dense_g ** 2) + np.sum(summed ** 2) + np.sum(occ_g[2] ** 2)
    cap = 0.5 * np.sqrt(occ_norm2)
    assert abs(np.sqrt(summed_norm2) - np.sqrt(occ_norm2)) > 0.05 * cap  # the two norms differ here
    d_var, dg_var, f_var = pt.dmatrix("D"), pt.dmatrix("dg"), pt.dmatrix("E")
    g_var = pt.tensor("g", dtype="float64", shape=(3, 2))
    i_const = pt.as_tensor_variable(idx)
    state = {"D": d_var, "E": f_var, "step": pt.as_tensor_variable(np.float64(0)),
             "ok": pt.as_tensor_variable(np.array(True))}
    rows = optim.RowGrads(i_const, f_var[i_const], g_var, pt.as_tensor_variable(np.ones(3, bool)))
    new = optim.apply_gradients(opt, cap, state, {"D": dg_var}, {"E": rows}, pt.as_tensor_variable(np.float64(1.0)),
                                pt.as_tensor_variable(np.ones(2, bool)))
    fn = pytensor.function([d_var, dg_var, f_var, g_var], [new["D"], new["E"]], mode="FAST_COMPILE")
    got_d, got_e = fn(dense, dense_g, full, occ_g)
    scale = cap / np.sqrt(occ_norm2)
    np.testing.assert_allclose(got_d, dense - 0.1 * (dense_g * scale + 0.5 * dense), rtol=1e-6)
    want_e = full.copy()
    want_e[2] -= 0.1 * (summed * scale + 0.5 * full[2])
    want_e[0] -= 0.1 * (occ_g[2] * scale + 0.5 * full[0])
    np.testing.assert_allclose(got_e, want_e, rtol=1e-6)


@pytest.mark.parametrize("branch", [True, False], ids=["conditional", "select"])
@pytest.mark.parametrize("how", ["rows", "matrix"])
def test_a_step_with_a_non_finite_new_value_changes_nothing(branch, how):
    """Both ways of keeping or dropping a step (one conditional on a CPU, a select on a GPU), with
    the item matrix written by rows and whole: a finite step applies the update; one whose new
    velocity overflows float32 leaves every array and the step counter as they were, and `ok`
    turns false."""
    opt = optim.Optimizer("adagrad", {"epsilon": 1e-6}, 0.1, 0.5, 0.0)
    rng = np.random.default_rng(4)
    dense, dense_g = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32)
    full, occ_g = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3, 3)).astype(np.float32)
    idx = np.array([2, 0, 2], np.int32)
    names = ["D", "acc/D", "velocity/D", "E", "acc/E", "velocity/E"]
    variables = {k: pt.matrix(k.replace("/", "_"), dtype="float32", shape=(4 if k.endswith("E") else 2, 3))
                 for k in names}
    state = {**variables, "step": pt.as_tensor_variable(np.float32(0)), "ok": pt.as_tensor_variable(np.array(True))}
    dg_var, g_var = pt.matrix("dg", dtype="float32", shape=(2, 3)), pt.matrix("g", dtype="float32", shape=(3, 3))
    i_const = pt.as_tensor_variable(idx)
    rows = optim.RowGrads(i_const, variables["E"][i_const], g_var, pt.as_tensor_variable(np.ones(3, bool)))
    new = optim.apply_gradients(opt, 0.0, state, {"D": dg_var}, {"E": rows}, pt.as_tensor_variable(np.float32(1.0)),
                                pt.as_tensor_variable(np.ones(2, bool)), item_update=how, branch=branch)
    keys = [*names, "step", "ok"]
    fn = pytensor.function([*variables.values(), dg_var, g_var], [new[k] for k in keys], mode="JAX")
    values = {k: np.zeros_like(dense if k.endswith("D") else full) for k in names}
    values.update(D=dense, E=full)
    applied = dict(zip(keys, map(np.asarray, fn(*values.values(), dense_g, occ_g))))
    assert bool(applied["ok"]) and float(applied["step"]) == 1.0
    assert not np.allclose(applied["D"], dense) and not np.allclose(applied["E"][[0, 2]], full[[0, 2]])
    np.testing.assert_array_equal(applied["E"][[1, 3]], full[[1, 3]])  # untouched rows
    # E + 0.5 * velocity overflows float32 on the touched rows (both are finite before the step)
    overflow = dict(values, **{"velocity/E": np.full_like(full, 3e38), "E": np.full_like(full, 3e38)})
    dropped = dict(zip(keys, map(np.asarray, fn(*overflow.values(), dense_g, occ_g))))
    assert not bool(dropped["ok"]) and float(dropped["step"]) == 0.0
    for key in names:
        np.testing.assert_array_equal(dropped[key], overflow[key], err_msg=key)


def test_adadelta_runs_at_learning_rate_one_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="gru4rec_lib.optim"):
        opt = _opt("adadelta", 0.0, lr=0.05)
    assert opt.learning_rate == 1.0
    assert "learning_rate=0.05 is replaced by 1.0" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gru4rec_lib.optim"):
        assert _opt("adagrad", 0.0, lr=0.05).learning_rate == 0.05
    assert not caplog.text


def test_optimizer_constants_are_the_authors():
    assert optim.OPTIMIZER_DEFAULTS["adam"]["epsilon"] == 1e-6  # the authors' adam: epsilon=1e-6
    assert optim.OPTIMIZER_DEFAULTS["adagrad"] == {"epsilon": 1e-6}
    assert gru4rec.OPTIMIZER_DEFAULTS is optim.OPTIMIZER_DEFAULTS


# ---------------------------------------------------------------- schedule
@pytest.mark.slow
def test_a_lone_session_without_negatives_is_not_trained():
    """n_sample=0, batch_size=2: sessions [a b c d e] and [c d]. After the first step one session is
    left, with no negative: the authors end the epoch there, so only that step trains (even with
    lmbd and momentum, which would move the weights on a zero gradient) and only it counts in the
    epoch loss. With negatives sampled, the lone session's steps are trained."""
    events = pd.DataFrame({"SessionId": [1] * 5 + [2] * 2, "ItemId": [10, 11, 12, 13, 14, 12, 13],
                           "Time": [0.0, 1, 2, 3, 4, 0.5, 1.5]})
    common = dict(layers=(3,), batch_size=2, n_epochs=1, lmbd=0.1, momentum=0.5, steps_per_call=2,
                  show_progress=False, loss="cross-entropy", final_act="softmax", seed=3)
    init = initial_state(events, n_sample=0, **common)
    model = gru4rec.GRU4Rec(n_sample=0, **common).fit(events)
    state = model.state_dict()
    assert float(state["step"]) == 1.0
    first_step_only = pd.DataFrame({"SessionId": [1, 1, 2, 2, 3], "ItemId": [10, 11, 12, 13, 14],
                                    "Time": [0.0, 1, 0.5, 1.5, 4]})  # same items; session 3 is too short to train
    one_step = gru4rec.GRU4Rec(n_sample=0, **common).fit(first_step_only)
    for key, value in one_step.state_dict().items():
        np.testing.assert_allclose(state[key], value, rtol=1e-6, atol=1e-7, err_msg=key)
    assert not np.array_equal(state["Wh_0"], init["Wh_0"])
    sampled = gru4rec.GRU4Rec(n_sample=2, **common).fit(events)
    assert float(sampled.state_dict()["step"]) == 4.0


# ---------------------------------------------------------------- retrain
@pytest.mark.slow
def test_retrain_new_rows_of_the_one_hot_input_are_initialised_per_block():
    """New rows of Wx_0 (one-hot input, 3 column blocks of h): U[-s, s], s = sqrt(6 / (n_items + h)) as
    a fresh fit; old rows and all optimiser state kept; the new rows' state (Adam's counts too) zero."""
    events = synthetic.generate_sessions(n_sessions=60, n_items=12, seed=4)
    params = dict(layers=(6,), embedding=0, adapt="adam", momentum=0.3, n_epochs=1, n_sample=3, batch_size=8,
                  show_progress=False, seed=5)
    model = gru4rec.GRU4Rec(**params).fit(events)
    before = model.state_dict()
    new = events.copy()
    new["ItemId"] = np.where(new.index % 3 == 0, new["ItemId"] + 1000, new["ItemId"])
    grown = retrain_start_state(model, new)
    model.fit(new, retrain=True)
    n_old, n_all = len(before["Wx_0"]), model.n_items_
    assert n_all > n_old
    for key, value in before.items():
        np.testing.assert_array_equal(grown[key][:len(value)] if value.ndim else grown[key], value, err_msg=key)
    bound = np.sqrt(6.0 / (n_all + 6))
    new_rows = grown["Wx_0"][n_old:]
    assert np.abs(new_rows).max() <= bound and np.abs(new_rows).max() > 0.5 * bound
    for key in grown:
        if "/" in key and key.split("/")[1] in ("Wx_0", "Wy", "By"):  # the item matrices' state
            assert not grown[key][n_old:].any(), key
    assert before["count/Wy"].max() >= 1  # the old rows' Adam counts were kept, not reset


# ---------------------------------------------------------------- evaluation: tiebreaking
def test_tiebreaking_formula_places_the_target_uniformly_among_its_ties():
    scores = np.array([[0.3, 0.5, 0.3, 0.1, 0.3]])  # target column 0: 1 greater, 2 ties
    target = scores[:, 0]
    got = [evaluation.target_ranks(scores, target, np.array([1]), "tiebreaking", uniform=np.array([u]))[0]
           for u in (0.0, 0.2, 0.34, 0.5, 0.67, 0.99)]
    assert got == [2, 2, 3, 3, 4, 4]


def test_tiebreaking_matches_the_authors_noise_by_brute_force():
    """The authors add 1e-10 * U[0, 1) to every score and rank with `standard`: the distribution of
    the target's rank equals ours with a uniform u per point."""
    rng = np.random.default_rng(6)
    scores = np.array([0.2, 0.7, 0.2, 0.2, -0.1, 0.2, 0.9])  # target 0: 2 greater, 3 ties
    n = 20_000
    noisy = scores + 1e-10 * rng.random((n, len(scores)))
    brute = 1 + (noisy > noisy[:, :1]).sum(axis=1)
    ours = evaluation.target_ranks(np.tile(scores, (n, 1)), np.full(n, 0.2), np.ones(n), "tiebreaking",
                                   uniform=rng.random(n))
    for rank in (3, 4, 5, 6):  # each place has probability 1/4; 5 sigma of a binomial(20000, 1/4) is ~0.015
        assert abs(np.mean(brute == rank) - 0.25) < 0.015 and abs(np.mean(ours == rank) - 0.25) < 0.015
    assert set(np.unique(ours)) == {3, 4, 5, 6}


@pytest.mark.slow
def test_tiebreaking_evaluation_lies_between_standard_and_conservative_and_repeats():
    events = synthetic.generate_sessions(n_sessions=200, n_items=30, seed=7)
    train, test = synthetic.split_by_time(events, test_fraction=0.3)
    model = gru4rec.GRU4Rec(layers=(8,), n_epochs=1, n_sample=4, batch_size=16, steps_per_call=4,
                            show_progress=False, seed=8).fit(train)
    state = model.state_dict()
    group = np.arange(0, model.n_items_, 2)
    state["Wy"][group], state["By"][group] = 0.0, 0.0  # half of the items tie exactly, whatever the state
    model.load_state_dict(state)
    kw = dict(cutoffs=(5,), batch_size=8, steps_per_call=4, return_ranks=True)
    std, cons, tie = (evaluation.evaluate(model, test, mode=m, **kw)["ranks"]["rank"].to_numpy()
                      for m in ("standard", "conservative", "tiebreaking"))
    tied = cons > std
    assert tied.mean() > 0.3
    assert np.all((std <= tie) & (tie <= cons)) and np.all(tie == np.round(tie))
    assert 0.3 < np.mean((tie[tied] - std[tied]) / (cons[tied] - std[tied])) < 0.7
    again = evaluation.evaluate(model, test, mode="tiebreaking", **kw)["ranks"]["rank"].to_numpy()
    np.testing.assert_array_equal(again, tie)
