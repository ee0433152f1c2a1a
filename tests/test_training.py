"""Training vs numpy: exact optimiser steps, fused steps, seeds and dropout, learning.

Each `fit` compiles a graph (seconds), so the fitted models are module-scoped fixtures and the
shapes are tiny. The step tests re-compute two session-parallel training steps in float64 numpy
with finite-difference gradients (tests/numpy_reference.py) and compare every weight and every
optimiser state with the model's at float32 tolerance.
"""
import numpy as np
import numpy_reference as ref
import pandas as pd
import pytest
from state_capture import initial_state

from gru4rec_lib import backend, optim
import gru4rec
from gru4rec_lib import sampling
from gru4rec_lib import synthetic

COMMON = dict(show_progress=False, seed=7, n_epochs=1)


def _state(model):
    return model.state_dict()


def _weight_names(state):
    """The weights of a state dict: neither optimiser state ('acc/Wy', ...) nor the step counter."""
    return [name for name in state if "/" not in name and name != "step"]


def fit_capturing_init(data, **params):
    """Fit and also return the freshly initialised state (the state the fit starts its steps from)."""
    return gru4rec.GRU4Rec(**{**COMMON, **params}).fit(data), initial_state(data, **COMMON, **params)


# ---------------------------------------------------------------- two exact training steps
# Sessions of length 3, 3 and 2 with batch_size 3: exactly two steps, the second with slot 2 idle.
# Step 1 feeds [a, a, d] -> [b, c, a]: item a is two slots' input and a third slot's target.
# Step 2 feeds [b, c, -] -> [c, b, -]: the idle slot holds item index 0, which is g (first row),
# an item that only occurs in a session of length 1 (as e and f): never fed or targeted.
A, B, C, D, E, F, G = 10, 11, 12, 13, 14, 15, 16
STEP_DATA = pd.DataFrame({
    "SessionId": [5, 1, 1, 1, 2, 2, 2, 3, 3, 4, 6],
    "ItemId": [G, A, B, C, A, C, B, D, A, F, E],
    "Time": [6.0, 0.0, 1.0, 2.0, 0.5, 1.5, 2.5, 0.7, 1.7, 5.0, 7.0],
})
STEP_INPUTS = [[A, A, D], [B, C]]  # the active slots of each step
STEP_TARGETS = [[B, C, A], [C, B]]

STEP_CONFIGS = {
    "xe_logq_smoothing_momentum_shared": dict(
        loss="cross-entropy", final_act="softmax", layers=(4, 3), constrained_embedding=True, logq=1.0,
        sample_alpha=0.5, smoothing=0.1, momentum=0.5, learning_rate=0.1, n_sample=5, steps_per_call=2),
    "bprmax_separate_l2_rmsprop": dict(
        loss="bpr-max", final_act="elu-1", layers=(4,), embedding=3, bpreg=0.5, lmbd=0.05,
        adapt="rmsprop", learning_rate=0.05, n_sample=5, sample_alpha=1.0, steps_per_call=1),
    "none_smoothing_gradcap": dict(
        loss="xe_logit", final_act="softmax_logit", layers=(5,), embedding=0, smoothing=0.2, grad_cap=0.08,
        momentum=0.3, learning_rate=0.2, n_sample=0, steps_per_call=3),
    # one step per optimiser, each with lmbd (decoupled from the scaling), most with momentum
    "top1_adagrad_l2_gradcap_momentum_shared": dict(
        loss="top1", final_act="tanh", layers=(4,), constrained_embedding=True, lmbd=0.02, grad_cap=0.01,
        momentum=0.4, learning_rate=0.1, n_sample=5, steps_per_call=1),
    "bpr_adadelta_l2_separate": dict(
        loss="bpr", final_act="linear", layers=(4,), embedding=3, adapt="adadelta", lmbd=0.01,
        learning_rate=0.05, n_sample=4, steps_per_call=2),
    "top1max_adam_l2_momentum_none": dict(
        loss="top1-max", final_act="linear", layers=(3,), embedding=0, adapt="adam", lmbd=0.01, momentum=0.2,
        adapt_params={"beta1": 0.8, "beta2": 0.9}, learning_rate=0.05, n_sample=3, steps_per_call=1),
    "bprmax_sgd_l2_gradcap_momentum_shared": dict(
        loss="bpr-max", final_act="linear", layers=(4,), constrained_embedding=True, adapt=None, lmbd=0.03,
        grad_cap=0.02, momentum=0.5, learning_rate=0.3, n_sample=4, steps_per_call=2),
}


# How each configuration writes its item matrices (item_update): the rows path and the whole-matrix
# path each cover every embedding mode; with sampled negatives the whole path scores them as counts
# over the catalogue (weighted columns), without them it takes the in-batch columns from the product.
# tests/test_conformance.py checks both writes for every optimiser.
STEP_CASES = [("xe_logq_smoothing_momentum_shared", "rows"), ("xe_logq_smoothing_momentum_shared", "matrix"),
              ("bprmax_separate_l2_rmsprop", "matrix"), ("none_smoothing_gradcap", "rows"),
              ("none_smoothing_gradcap", "matrix"), ("top1_adagrad_l2_gradcap_momentum_shared", "rows"),
              ("bpr_adadelta_l2_separate", "rows"), ("top1max_adam_l2_momentum_none", "matrix"),
              ("bprmax_sgd_l2_gradcap_momentum_shared", "matrix")]


@pytest.fixture(scope="module", params=STEP_CASES, ids=[f"{name}-{how}" for name, how in STEP_CASES])
def stepped(request):
    name, how = request.param
    params = dict(STEP_CONFIGS[name], batch_size=3, sample_store=1000, item_update=how)
    model, init = fit_capturing_init(STEP_DATA, **params)
    return f"{name} ({how})", params, model, init


def _reference_steps(params, model, init):
    """Two training steps in numpy (the authors' update) from the model's initial state.

    Returns (params, opt, touched, losses): `touched` are the rows of Wy and By that the steps use,
    `losses` the two steps' losses.
    """
    cfg = model.config()
    weights = {n: init[n].astype(np.float64) for n in _weight_names(init)}
    opt = {k: np.zeros(init[k].shape) for k in init if "/" in k}
    idx = model.item_map_.indices
    support = np.bincount(idx(STEP_DATA.ItemId.to_numpy()), minlength=model.n_items_)
    log_support = np.log(np.maximum(support, 1))
    ref_cfg = dict(mode=cfg.mode, n_layers=len(cfg.layers), loss=cfg.loss, final_act=cfg.final_act,
                   logq=cfg.logq, sample_alpha=cfg.sample_alpha, smoothing=cfg.smoothing, bpreg=cfg.bpreg,
                   lmbd=cfg.lmbd, grad_cap=cfg.grad_cap, learning_rate=cfg.learning_rate,
                   momentum=cfg.momentum, adapt=cfg.adapt, adapt_params=cfg.adapt_params)
    store = np.asarray(model._store_var.get_value(borrow=True))
    hidden = [np.zeros((3, h)) for h in cfg.layers]
    touched, losses = set(), []
    for step in range(2):
        inputs, targets = idx(STEP_INPUTS[step]), idx(STEP_TARGETS[step])
        negatives = store[step] if params["n_sample"] else np.zeros(0, np.int32)
        touched |= set(targets) | set(negatives) | (set(inputs) if cfg.mode == "shared" else set())
        hidden = [h[:len(inputs)] for h in hidden]  # the slots still active (the first ones here)
        losses.append(ref.step_loss(weights, ref_cfg, inputs, targets, negatives, hidden, log_support, 3)[0])
        hidden = ref.train_step(weights, opt, ref_cfg, inputs, targets, negatives, hidden, log_support, 3)
    if cfg.grad_cap:
        assert ref_cfg["capped"] == [True, True], "grad_cap should bind"
    return weights, opt, touched, losses


def test_two_training_steps_match_numpy(stepped):
    name, params, model, init = stepped
    weights, opt, _, _ = _reference_steps(params, model, init)
    got = _state(model)
    assert float(got["step"]) == 2.0
    for key in [*weights, *opt]:
        want = weights[key] if key in weights else opt[key]
        atol = 1e-7 if key.startswith("acc/") else 5e-6  # accumulators are small: a tighter bound
        np.testing.assert_allclose(got[key], want, rtol=1e-4, atol=atol, err_msg=f"{name}: {key}")
    assert set(got) == set(weights) | set(opt) | {"step"}


def test_epoch_loss_weights_each_step_by_its_active_rows(stepped):
    """As the authors' code: sum_s n_s L_s / sum_s n_s, here (3 L_1 + 2 L_2) / 5."""
    name, params, model, init = stepped
    _, _, _, losses = _reference_steps(params, model, init)
    np.testing.assert_allclose(model.epoch_losses_, [(3 * losses[0] + 2 * losses[1]) / 5], rtol=1e-5, err_msg=name)


def test_duplicates_are_exercised(stepped):
    name, params, model, _ = stepped
    idx = model.item_map_.indices
    inputs, targets = idx(STEP_INPUTS[0]), idx(STEP_TARGETS[0])
    assert len(set(inputs)) < len(inputs)  # a is two slots' input
    if params["n_sample"]:
        columns = np.concatenate([targets, np.asarray(model._store_var.get_value())[0]])
        assert len(set(columns)) < len(columns), "a sampled negative repeats a target or another sample"


def test_untouched_rows_and_their_state_do_not_change(stepped):
    name, params, model, init = stepped
    _, _, touched, _ = _reference_steps(params, model, init)
    got = _state(model)
    idx = model.item_map_.indices
    never_fed = sorted(set(range(model.n_items_)) - set(idx([A, B, C, D])))  # e, f and g
    input_name = {"none": "Wx_0", "separate": "E", "shared": "Wy"}[model.config().mode]  # the item input matrix
    if input_name != "Wy":
        for key in [input_name] + [k for k in got if k.endswith("/" + input_name)]:
            np.testing.assert_array_equal(got[key][never_fed], init[key][never_fed], err_msg=key)
        assert not np.array_equal(got[input_name], init[input_name])
    untouched = sorted(set(range(model.n_items_)) - touched)  # not a score column (nor Wy input)
    assert idx([G]).tolist() == [0]  # the idle slot's placeholder row
    if not params["n_sample"]:
        assert untouched == sorted(idx([D, E, F, G]))
    for key in [k for k in got if k.split("/")[-1] in ("Wy", "By")]:
        np.testing.assert_array_equal(got[key][untouched], init[key][untouched], err_msg=key)


def test_init_is_uniform_per_block_with_zero_biases_and_state(stepped):
    _, _, model, init = stepped
    names = _weight_names(init)
    cfg = model.config()
    layer_names = [f"{kind}_{i}" for i in range(len(cfg.layers)) for kind in ("Wx", "Wh", "Bh")]
    assert sorted(names) == sorted(layer_names + ["Wy", "By"] + (["E"] if cfg.mode == "separate" else []))
    for name in names:
        value = init[name]
        (rows, *cols), n_blocks = value.shape, 0 if name[0] == "B" else 3 if name[:2] in ("Wx", "Wh") else 1
        if n_blocks == 0:
            assert not value.any(), name
            continue
        bound = np.sqrt(6.0 / (rows + cols[0] // n_blocks))
        assert np.abs(value).max() <= bound and np.abs(value).max() > 0.3 * bound, name
    assert all(not init[k].any() for k in init if "/" in k)


# ---------------------------------------------------------------- fused steps, seeds, dropout RNG
FUSED_DATA = synthetic.generate_sessions(n_sessions=40, n_items=15, mean_length=4, seed=3)
FUSED = dict(loss="cross-entropy", final_act="softmax", layers=(6,), batch_size=4, n_sample=3,
             sample_store=3 * 5000, momentum=0.3, n_epochs=2, train_random_order=True)


@pytest.fixture(scope="module")
def fused_runs():
    """Same data and seed with K=1, K=5 (twice) and K=5 with another seed; no dropout."""
    def run(steps_per_call, seed, item_update="auto"):
        model = gru4rec.GRU4Rec(**{**COMMON, **FUSED, "steps_per_call": steps_per_call, "seed": seed,
                                   "item_update": item_update})
        model.fit(FUSED_DATA)
        return model, _state(model)

    return {"k1": run(1, 1), "k5": run(5, 1), "k5_again": run(5, 1), "k5_seed2": run(5, 2),
            "k5_matrix": run(5, 1, "matrix")}


def test_fused_steps_give_the_same_weights_as_single_steps(fused_runs):
    k1, k5 = fused_runs["k1"][1], fused_runs["k5"][1]
    for key in k1:
        np.testing.assert_allclose(k5[key], k1[key], rtol=1e-4, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(fused_runs["k5"][0].epoch_losses_, fused_runs["k1"][0].epoch_losses_, rtol=1e-5)
    assert float(k1["step"]) == float(k5["step"]) > 0  # padded steps of the last call do not count


@pytest.mark.parametrize("steps_per_call", [1, 16])
def test_a_fit_whose_last_refill_draws_only_the_rows_it_uses_trains_as_with_whole_refills(monkeypatch,
                                                                                         steps_per_call):
    """27 steps an epoch, 4 epochs, a store of 80 rows: the refill in the third epoch is told that
    28 or fewer rows remain and draws 64; the fit is exactly the one that draws 80."""
    params = {**COMMON, **FUSED, "train_random_order": False, "n_epochs": 4, "sample_store": 3 * 80,
              "dropout_p_hidden": 0.2, "seed": 4, "steps_per_call": steps_per_call}
    trimmed = gru4rec.GRU4Rec(**params).fit(FUSED_DATA)
    monkeypatch.setattr(sampling.SampleStore, "PARTIAL_ROWS", 10**9)  # every refill draws the whole store
    whole = gru4rec.GRU4Rec(**params).fit(FUSED_DATA)
    assert trimmed.epoch_losses_ == whole.epoch_losses_
    for key, value in whole.state_dict().items():
        np.testing.assert_array_equal(trimmed.state_dict()[key], value, err_msg=key)


def test_whole_matrix_updates_give_the_same_weights_as_row_updates(fused_runs):
    """item_update='matrix' against 'auto', which is 'rows' for 15 items and 7 score columns."""
    assert not optim.use_matrix_update("auto", 15, 7)
    rows, whole = fused_runs["k5"][1], fused_runs["k5_matrix"][1]
    for key in rows:
        np.testing.assert_allclose(whole[key], rows[key], rtol=1e-4, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(fused_runs["k5_matrix"][0].epoch_losses_, fused_runs["k5"][0].epoch_losses_, rtol=1e-5)
    assert float(whole["step"]) == float(rows["step"]) > 0


@pytest.mark.parametrize("how,n_rows,n_occurrences,whole", [
    ("auto", 2933, 2112, True), ("auto", 4224, 2112, True), ("auto", 4225, 2112, False), ("auto", 40000, 2176, False),
    ("rows", 10, 100, False), ("matrix", 10**6, 10, True)])
def test_auto_item_update_is_whole_up_to_twice_the_touched_rows(how, n_rows, n_occurrences, whole):
    assert optim.use_matrix_update(how, n_rows, n_occurrences) is whole


def test_same_seed_repeats_exactly_and_other_seed_differs(fused_runs):
    first, again, other = fused_runs["k5"][1], fused_runs["k5_again"][1], fused_runs["k5_seed2"][1]
    for key in first:
        np.testing.assert_array_equal(again[key], first[key], err_msg=key)
    assert fused_runs["k5_again"][0].epoch_losses_ == fused_runs["k5"][0].epoch_losses_
    assert not np.allclose(other["Wy"], first["Wy"]) and not np.allclose(other["Wh_0"], first["Wh_0"])


def test_epochs_have_their_own_loss_and_stats(fused_runs):
    model = fused_runs["k5"][0]
    assert len(model.epoch_losses_) == 2 and np.all(np.isfinite(model.epoch_losses_))
    stats = model.epoch_stats_
    assert [s["epoch"] for s in stats] == [1, 2]
    assert all(s["seconds"] > 0 and s["batches_per_s"] > 0 and s["events_per_s"] > 0 for s in stats)


def fit_capturing_train_fn(data, **params):
    """Fit with n_epochs=0 (initialise and compile only) and return (model, compiled training fn)."""
    captured = []
    original = gru4rec.GRU4Rec._compile_train

    def spy(self, *args, **kwargs):
        captured.append(original(self, *args, **kwargs))
        return captured[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gru4rec.GRU4Rec, "_compile_train", spy)
        model = gru4rec.GRU4Rec(**{**COMMON, **params, "n_epochs": 0}).fit(data)
    return model, captured[0]


def _idle_chunk(K, batch):
    """K steps of `batch` inactive slots: weights stay, but hidden states and dropout still run."""
    items = np.arange(K * batch, dtype=np.int32).reshape(K, batch) % 5
    return items, items, np.ones((K, batch), bool), np.zeros((K, batch), bool), np.zeros(K, np.int32)


@pytest.mark.slow
def test_dropout_masks_differ_per_step_and_are_threaded_through_scan():
    """A mask shows as the exact zeros of the carried (dropped-out) hidden state.

    K=1 called twice and K=2 called once must apply the same two masks: this fails if the RNG
    state were not carried from step to step inside scan (K=2 would repeat the first mask), or
    not kept from call to call (K=1 would repeat it).
    """
    params = dict(loss="bpr-max", layers=(8,), batch_size=8, n_sample=0, dropout_p_hidden=0.5)

    def mask(model):
        hidden = np.array(model._train_vars["hidden_0"].get_value())
        return hidden == 0

    single, fn1 = fit_capturing_train_fn(FUSED_DATA, steps_per_call=1, **params)
    fn1(*_idle_chunk(1, 8))
    first = mask(single)
    fn1(*_idle_chunk(1, 8))
    second = mask(single)
    fused, fn2 = fit_capturing_train_fn(FUSED_DATA, steps_per_call=2, **params)
    fn2(*_idle_chunk(2, 8))
    assert 0.3 < first.mean() < 0.7 and 0.3 < second.mean() < 0.7
    assert (first != second).any()
    np.testing.assert_array_equal(mask(fused), second)


@pytest.mark.parametrize("dropout_p_hidden", [0.0, 0.3])
def test_embedding_dropout_is_ignored_with_one_hot_input(dropout_p_hidden):
    """One-hot input has no embedding vector to drop (the authors' code ignores the option there):
    the fit runs, and gives the weights of the same fit without it."""
    params = dict(loss="bpr-max", layers=(6,), batch_size=8, n_sample=4, n_epochs=1, embedding=0,
                  constrained_embedding=False, dropout_p_hidden=dropout_p_hidden, show_progress=False, seed=1)
    data = synthetic.generate_sessions(n_sessions=60, n_items=20, seed=4)
    dropped = gru4rec.GRU4Rec(dropout_p_embed=0.5, **params).fit(data)
    plain = gru4rec.GRU4Rec(**params).fit(data)
    for key, value in plain.state_dict().items():
        np.testing.assert_array_equal(dropped.state_dict()[key], value, err_msg=key)


# ---------------------------------------------------------------- negative sampling (host side)
@pytest.mark.parametrize("probabilities", [[0.5, 0.5], [1.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4],
                                           np.random.default_rng(3).pareto(1.0, 1000) + 1])
def test_alias_table_implies_exactly_the_distribution(probabilities):
    p = np.asarray(probabilities, dtype=float) / np.sum(probabilities)
    accept, alias = sampling.alias_table(p)
    implied = accept / len(p)  # column j kept with accept[j], else its alias
    np.add.at(implied, alias, (1 - accept) / len(p))
    np.testing.assert_allclose(implied, p, atol=1e-12)


def _store(support, alpha, n_sample, store_size, steps_per_call, seed, draw_on="auto"):
    return sampling.SampleStore(np.asarray(support), alpha, n_sample=n_sample, store_size=store_size,
                               steps_per_call=steps_per_call, rng=np.random.default_rng(seed),
                               device=backend.resolve_device("cpu"), draw_on=draw_on)


def _contents(store):
    return np.array(store.var.get_value(borrow=True))


@pytest.mark.parametrize("draw_on", ["host", "device"])
def test_sample_store_draws_by_support_to_the_alpha(draw_on):
    """Drawn by numpy (a CPU's way) or by a compiled program (a GPU's way, run here on the CPU)."""
    support = np.array([1, 4, 9, 16, 0, 25])
    store = _store(support, 0.5, n_sample=50, store_size=50 * 400, steps_per_call=4, seed=0, draw_on=draw_on)
    assert store.draw_on == draw_on
    rows, refilled = store.rows_for(np.array([True, True, False, True]))
    drawn = _contents(store)
    assert refilled and drawn.shape == (400, 50) and drawn.dtype == np.int32
    assert rows.tolist() == [0, 1, 0, 2]  # inactive steps use no row
    freq = np.bincount(drawn.ravel(), minlength=6) / drawn.size
    want = np.sqrt(support) / np.sqrt(support).sum()
    np.testing.assert_allclose(freq, want, atol=0.01)  # 20,000 draws: sd <= 0.0035
    assert freq[4] == 0
    rows, refilled = store.rows_for(np.ones(4, bool))
    assert not refilled and rows.tolist() == [3, 4, 5, 6]
    np.testing.assert_array_equal(_contents(store), drawn)
    again = _store(support, 0.5, n_sample=50, store_size=50 * 400, steps_per_call=4, seed=0, draw_on=draw_on)
    again.prepare()  # drawn in a thread on the host, used at the next rows_for
    again.rows_for(np.ones(4, bool))
    np.testing.assert_array_equal(_contents(again), drawn)  # the seed fixes the draws


def test_sample_store_is_drawn_by_numpy_for_a_cpu_and_rejects_an_unknown_way():
    assert _store(np.ones(3), 1.0, n_sample=2, store_size=20, steps_per_call=1, seed=0).draw_on == "host"
    with pytest.raises(ValueError, match="draw_on must be"):
        _store(np.ones(3), 1.0, n_sample=2, store_size=20, steps_per_call=1, seed=0, draw_on="gpu")


def test_a_failed_draw_in_the_background_fails_the_fit_with_its_error(monkeypatch):
    """The first draw runs in a thread on a CPU: its exception reaches the caller of `fit`."""
    def fail(self, rows, *generators):
        raise MemoryError("no room for the sample store")

    monkeypatch.setattr(sampling.SampleStore, "_draw_on_host", fail)
    model = gru4rec.GRU4Rec(**{**COMMON, **FUSED, "n_epochs": 1})
    with pytest.raises(MemoryError, match="no room for the sample store"):
        model.fit(FUSED_DATA)


@pytest.mark.parametrize("draw_on", ["host", "device"])
def test_sample_store_redraws_when_used_up_and_per_step_when_small(draw_on):
    store = _store(np.ones(5), 1.0, n_sample=2, store_size=2 * 5, steps_per_call=2, seed=1, draw_on=draw_on)
    store.rows_for(np.ones(2, bool))
    first = _contents(store)
    store.rows_for(np.ones(2, bool))
    rows, refilled = store.rows_for(np.ones(2, bool))  # 4 of 5 rows used: the next 2 do not fit
    assert refilled and rows.tolist() == [0, 1] and not np.array_equal(_contents(store), first)
    tiny = _store(np.ones(5), 1.0, n_sample=4, store_size=7, steps_per_call=3, seed=2, draw_on=draw_on)
    assert tiny.shape == (3, 4)
    rows_a, refilled_a = tiny.rows_for(np.array([True, False, True]))
    a = _contents(tiny)
    rows_b, refilled_b = tiny.rows_for(np.ones(3, bool))
    b = _contents(tiny)
    assert refilled_a and refilled_b and a.shape == b.shape == (3, 4) and not np.array_equal(a, b)
    assert rows_b.tolist() == [0, 1, 2]


# ---------------------------------------------------------------- learning and divergence
@pytest.mark.slow
def test_training_beats_popularity_on_planted_successors():
    events = synthetic.generate_sessions(n_sessions=1200, n_items=40, mean_length=5, n_successors=2,
                                         noise=0.1, popularity_exponent=0.8, seed=11)
    train, test = synthetic.split_by_time(events, test_fraction=0.15)
    model = gru4rec.GRU4Rec(loss="cross-entropy", final_act="softmax", constrained_embedding=True, layers=(32,),
                            batch_size=16, n_sample=16, learning_rate=0.1, n_epochs=3, steps_per_call=32,
                            show_progress=False, seed=1).fit(train)
    assert model.epoch_losses_[-1] < model.epoch_losses_[0]
    sessions = [group.to_numpy() for _, group in test.groupby("SessionId", sort=True)["ItemId"]]
    popular = train["ItemId"].value_counts().index[:5].to_numpy()
    n = len(sessions)
    hits_model = hits_popular = points = 0
    for t in range(max(map(len, sessions)) - 1):  # all test sessions in parallel, one event per call
        live = np.array([len(s) > t + 1 for s in sessions])
        inputs = np.array([s[t] if ok else sessions[0][0] for s, ok in zip(sessions, live)])
        slot_ids = np.where(live, np.arange(n), -1 - np.arange(n) - n * t)  # dead slots: a new id, a reset
        scores = model.predict_next_batch(slot_ids, inputs, batch=n)
        top5 = scores.to_numpy().argsort(axis=0)[::-1][:5]
        for i in np.flatnonzero(live):
            target = sessions[i][t + 1]
            hits_model += target in scores.index.to_numpy()[top5[:, i]]
            hits_popular += target in popular
            points += 1
    recall_model, recall_popular = hits_model / points, hits_popular / points
    assert points > 400
    assert recall_model > 0.75 and recall_model > recall_popular + 0.2, (recall_model, recall_popular)


@pytest.mark.slow
def test_divergence_raises_model_fit_error_and_keeps_finite_weights():
    data = FUSED_DATA
    model = gru4rec.GRU4Rec(**{**COMMON, "loss": "bpr-max", "layers": (4,), "batch_size": 4, "n_sample": 3,
                               "learning_rate": 1e20, "steps_per_call": 1, "n_epochs": 2})
    with pytest.raises(gru4rec.ModelFitError, match=r"non-finite loss .* in epoch 1, mini-batch 2\b"):
        model.fit(data)
    state = _state(model)
    assert all(np.isfinite(value).all() for value in state.values())
    assert float(state["step"]) == 1  # the step that produced the non-finite loss was not applied
    assert np.abs(state["Wy"]).max() > 1e10  # ... but the first (finite, huge) one was


@pytest.mark.slow
def test_training_works_when_jax_x64_is_enabled():
    # PyTensor's JAX dispatch sets the process-wide x64 flag from floatX when first imported
    import jax

    previous = jax.config.jax_enable_x64
    import pytensor.link.jax.dispatch  # noqa: F401  (its first import sets the flag from floatX)
    jax.config.update("jax_enable_x64", True)
    try:
        model = gru4rec.GRU4Rec(**{**COMMON, "layers": (4,), "batch_size": 4, "n_sample": 3,
                                   "steps_per_call": 2}).fit(FUSED_DATA)
        assert all(v.dtype == np.float32 for k, v in _state(model).items())
    finally:
        jax.config.update("jax_enable_x64", previous)
