"""No silently wrong result: non-finite scores and weights, failed fits, bad parameters, item id types,
live-session limits (issue 13, cases 1, 2, 6, 7, 8).

Each model is tiny (8 units, one epoch); the ones shared between tests are module fixtures.
"""
import inspect
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import evaluation
import gru4rec
from gru4rec_lib import synthetic

SMALL = dict(layers=(8,), n_epochs=1, n_sample=4, batch_size=8, steps_per_call=4, show_progress=False, seed=3)


def _events(n_sessions=80, n_items=15, seed=0, string_ids=False):
    return synthetic.generate_sessions(n_sessions=n_sessions, n_items=n_items, seed=seed, string_ids=string_ids)


@pytest.fixture(scope="module")
def model():
    return gru4rec.GRU4Rec(loss="bpr-max", final_act="elu-1", **SMALL).fit(_events())


@pytest.fixture
def fresh(model):
    model.end_sessions()
    yield model
    model.end_sessions()


# ---------------------------------------------------------------- 1. non-finite scores
def _overflowing(model):
    """A copy of the fitted model whose weights are finite but whose scores overflow float32 to inf:
    the biases saturate every gate (h' = 1) and Wy, By are near float32's largest value."""
    state = model.state_dict()
    state["Bh_0"] = np.full_like(state["Bh_0"], 50.0)
    state["Wy"] = np.full_like(state["Wy"], 3e38)
    state["By"] = np.full_like(state["By"], 3e38)
    return _clone(model, state)


def _clone(model, state):
    return gru4rec.GRU4Rec(**model.get_params()).load_state_dict(state, item_ids=model.item_ids_)


def test_state_dict_round_trip_gives_identical_scores(model):
    state = model.state_dict()
    assert all(v.dtype == np.float32 for v in state.values())
    assert {"Wy", "By", "Wh_0", "Bh_0", "step"} <= set(state)
    state["Wy"][:] = 0  # a copy: the model is unchanged
    assert np.any(model.state_dict()["Wy"] != 0)
    other = _clone(model, model.state_dict())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[key], value)
    np.testing.assert_array_equal(other.recommend(["a"], [3], k=5)[0], model.recommend(["a"], [3], k=5)[0])


def test_load_state_dict_validates_names_shapes_and_values(model):
    state = model.state_dict()
    with pytest.raises(ValueError, match=r"missing.*'Wy'"):
        _clone(model, {k: v for k, v in state.items() if k != "Wy"})
    with pytest.raises(ValueError, match=r"'Wy' has shape \(5, 8\).*expected \(15, 8\)"):
        _clone(model, {**state, "Wy": state["Wy"][:5]})
    with pytest.raises(ValueError, match=r"'Bh_0'.*not finite"):
        _clone(model, {**state, "Bh_0": np.full_like(state["Bh_0"], np.nan)})
    with pytest.raises(ValueError, match=r"unexpected.*'extra'"):
        _clone(model, {**state, "extra": np.zeros(3, np.float32)})


def test_evaluate_refuses_non_finite_scores(model):
    broken = _overflowing(model)
    test = _events(n_sessions=30, seed=1)
    with pytest.raises(ValueError, match="not finite"):
        evaluation.evaluate(broken, test, cutoffs=(1, 5))
    assert 0 <= evaluation.evaluate(model, test, cutoffs=(1, 5))["recall"][1] < 1


def test_recommend_refuses_non_finite_scores(model):
    broken = _overflowing(model)
    with pytest.raises(ValueError, match="not finite"):
        broken.recommend(["s"], [3], k=3)


def test_save_refuses_non_finite_weights(model, tmp_path):
    broken = _clone(model, model.state_dict())
    var = broken._state["Wh_0"]  # no public path writes NaN into a model; the check guards save anyway
    var.set_value(np.full(var.get_value().shape, np.nan, np.float32))
    with pytest.raises(ValueError, match=r"'Wh_0'.*not finite"):
        broken.save(tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 2. failed fits keep finite weights
@pytest.mark.slow
@pytest.mark.parametrize("item_update", ["rows", "matrix"])
def test_diverging_fit_keeps_the_weights_of_the_last_finite_step(item_update):
    initial = gru4rec.GRU4Rec(**{**SMALL, "n_epochs": 0}).fit(_events()).state_dict()
    diverging = gru4rec.GRU4Rec(**{**SMALL, "learning_rate": 1e39, "item_update": item_update})
    with pytest.raises(gru4rec.ModelFitError, match="non-finite"):
        diverging.fit(_events())
    state = diverging.state_dict()
    assert all(np.isfinite(v).all() for v in state.values())
    for name in ("Wy", "By", "Wh_0", "Wx_0"):  # the first step's update overflows: nothing was applied
        np.testing.assert_array_equal(state[name], initial[name], err_msg=name)


def _late_failure(steps_per_call, sample_store):
    """A fit whose L2 term doubles the weights' magnitude at every step (learning rate x lmbd = 3:
    p' = p - lr (d + lmbd p) = -2 p - lr d): some dozens of mini-batches in, a step overflows
    float32. Returns (the failing mini-batch the error names, the model's state_dict after it)."""
    model = gru4rec.GRU4Rec(layers=(8,), n_epochs=2, n_sample=8, batch_size=8, steps_per_call=steps_per_call,
                            learning_rate=1.0, lmbd=3.0, sample_store=sample_store, show_progress=False, seed=3)
    with pytest.raises(gru4rec.ModelFitError, match=r"non-finite loss or update in epoch 1, mini-batch") as info:
        model.fit(_events(n_sessions=1500, n_items=20))
    return int(re.search(r"mini-batch (\d+)", str(info.value)).group(1)), model.state_dict()


@pytest.mark.parametrize("sample_store", [10_000_000, 160], ids=["store", "store-of-20-rows"])
def test_a_late_non_finite_step_ends_the_fit_right_before_it(sample_store):
    """Calls after the first ones, across refills of the sample store (20 rows here) and whatever
    the steps per call: the model keeps exactly the steps before the failing one (each applied
    step counts), all finite, and a second fit fails at the same step with the same weights.
    (Which step overflows first depends on the rounding of the program that runs it, so fits
    with different K may fail a few steps apart.)"""
    for K in (1, 4):
        minibatch, state = _late_failure(K, sample_store)
        assert minibatch > 32, (K, minibatch)  # past the first calls and the first refills
        assert int(state["step"]) == minibatch - 1, K
        assert all(np.isfinite(value).all() for value in state.values()), K
        again, state_again = _late_failure(K, sample_store)
        assert again == minibatch, K
        for name, value in state.items():
            np.testing.assert_array_equal(state_again[name], value, err_msg=f"{name}, K={K}")


@pytest.mark.slow
def test_failed_retrain_leaves_the_model_as_before(model):
    before, ids = model.state_dict(), model.item_ids_.copy()
    new_items = _events(n_sessions=40, n_items=25, seed=9)  # 10 items the model has not seen
    model.set_params(learning_rate=1e39)
    try:
        with pytest.raises(gru4rec.ModelFitError):
            model.fit(new_items, retrain=True)
    finally:
        model.set_params(learning_rate=SMALL.get("learning_rate", 0.1))
    np.testing.assert_array_equal(model.item_ids_, ids)
    assert model.n_items_ == len(ids)
    after = model.state_dict()
    assert set(after) == set(before)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    assert model.recommend(["after-failed-retrain"], [3], k=3)[0].shape == (1, 3)
    model.end_sessions()


# ---------------------------------------------------------------- 6. parameter checks
BAD = [
    (dict(sample_alpha=1.5), r"sample_alpha=1.5 is invalid"),
    (dict(sample_alpha=-0.1), r"sample_alpha=-0.1 is invalid"),
    (dict(sample_alpha=float("nan")), r"sample_alpha=nan is invalid"),
    (dict(sample_alpha=float("inf")), r"sample_alpha=inf is invalid"),
    (dict(learning_rate=float("inf")), r"learning_rate=inf is invalid"),
    (dict(learning_rate=float("nan")), r"learning_rate=nan is invalid"),
    (dict(final_act="elu-nan"), r"final_act='elu-nan'"),
    (dict(final_act="leaky-inf"), r"final_act='leaky-inf'"),
    (dict(hidden_act="selu-1-nan"), r"hidden_act='selu-1-nan'"),
    (dict(adapt_params={"epsilon": float("nan")}), r"adapt_params=.*is invalid.*finite"),
    (dict(adapt_params={"epsilon": "x"}), r"adapt_params=.*is invalid"),
    (dict(sigma=float("inf")), r"sigma=inf is invalid"),
    (dict(grad_cap=float("inf")), r"grad_cap=inf is invalid"),
    (dict(momentum=float("nan")), r"momentum=nan is invalid"),
    (dict(bpreg=float("nan")), r"bpreg=nan is invalid"),
    (dict(item_update="dense"), r"item_update='dense' is invalid.*'auto', 'rows', 'matrix'"),
]


@pytest.mark.parametrize("params,message", BAD)
def test_non_finite_and_out_of_range_parameters_raise_before_any_work(params, message, monkeypatch):
    def no_read(*args, **kwargs):
        raise AssertionError("the data was read before the parameters were checked")

    monkeypatch.setattr(gru4rec.sessiondata, "load_events", no_read)
    with pytest.raises(ValueError, match=message):
        gru4rec.GRU4Rec(**{**SMALL, **params}).fit(_events())


@pytest.mark.parametrize("name", ["constrained_embedding", "init_as_normal", "train_random_order", "time_sort",
                                  "show_progress", "reset_between_sessions"])
def test_boolean_parameters_given_as_strings_raise_type_error(name):
    with pytest.raises(TypeError, match=f"{name}='False'.*True or False"):
        gru4rec.GRU4Rec(**{**SMALL, name: "False"}).fit(_events())


def test_config_is_frozen_and_built_from_the_signature():
    config = gru4rec.GRU4Rec(**SMALL).config()
    with pytest.raises(Exception):
        config.layers = (4,)
    assert config.layers == (8,) and config.loss == "bpr-max"
    assert hash(config) == hash(gru4rec.GRU4Rec(**SMALL).config())
    signature = inspect.signature(gru4rec.GRU4Rec.__init__)
    assert list(gru4rec.GRU4Rec().get_params()) == [name for name in signature.parameters if name != "self"]


# ---------------------------------------------------------------- 7. item id types
def test_mixed_item_id_types_are_refused_at_fit():
    events = _events()
    events["ItemId"] = events["ItemId"].astype(object)
    events.loc[events.index[:5], "ItemId"] = events["ItemId"].iloc[:5].astype(str)
    with pytest.raises(TypeError, match="item ids of mixed types"):
        gru4rec.GRU4Rec(**SMALL).fit(events)


def _with_ids(events, convert):
    codes, _ = pd.factorize(events["ItemId"])
    return events.assign(ItemId=convert(codes))


@pytest.mark.parametrize("convert, match", [
    (lambda c: pd.Categorical([str(i) if i % 2 else int(i) for i in c]), r"kinds \['int', 'str'\]"),
    (lambda c: pd.Series([bytes([65 + i]) for i in c], dtype=object), r"kinds \['bytes'\]"),
])
def test_item_ids_no_model_file_can_store_are_refused_at_fit(convert, match):
    with pytest.raises(TypeError, match=match):
        gru4rec.GRU4Rec(**SMALL).fit(_with_ids(_events(), convert))


def test_a_retrain_whose_ids_no_64_bit_type_holds_is_refused():
    events = _events()
    model = gru4rec.GRU4Rec(**SMALL).fit(_with_ids(events, lambda c: c.astype(np.uint64) + np.uint64(2**63)))
    with pytest.raises(TypeError, match="fit no 64-bit integer type"):
        model.fit(_with_ids(events, lambda c: -1 - c.astype(np.int64)), retrain=True)


@pytest.mark.slow
@pytest.mark.parametrize("convert", [lambda c: pd.Series(c * 0.5, dtype=object), lambda c: c % 2 == 0],
                         ids=["floats_in_an_object_column", "bools"])
def test_item_ids_of_other_kinds_save_and_load(tmp_path, convert):
    model = gru4rec.GRU4Rec(**SMALL).fit(_with_ids(_events(), convert))
    loaded = gru4rec.GRU4Rec.load(model.save(tmp_path / "m.npz"))
    np.testing.assert_array_equal(loaded.item_ids_, model.item_ids_)


def test_load_state_dict_refuses_ids_no_model_file_can_store(model):
    ids = [*model.item_ids_[:-1].tolist(), "a"]
    with pytest.raises(ValueError, match=r"kinds \['int', 'str'\]"):
        gru4rec.GRU4Rec(**SMALL).load_state_dict(model.state_dict(), item_ids=ids)
    with pytest.raises(ValueError, match=r"NaN"):  # None among ints: not silently the float nan
        gru4rec.GRU4Rec(**SMALL).load_state_dict(model.state_dict(), item_ids=[*model.item_ids_[:-1].tolist(), None])


@pytest.mark.slow
def test_every_fitted_model_can_be_saved(tmp_path):
    model = gru4rec.GRU4Rec(**SMALL).fit(_events(string_ids=True))
    loaded = gru4rec.GRU4Rec.load(model.save(tmp_path / "m.npz"))
    np.testing.assert_array_equal(loaded.item_ids_, model.item_ids_)


def test_recommend_warns_once_about_an_id_of_the_wrong_type(fresh):
    with pytest.warns(UserWarning, match=r"item id '3' \(str\).*int") as record:
        fresh.recommend(["w1", "w2"], ["3", ["3", 4]], k=3)
    assert len([w for w in record if "wrong type" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.recommend(["w3"], [12345], k=3)  # unknown but of the right type: no warning


# ---------------------------------------------------------------- 8. recommend at scale
def test_recommend_with_no_sessions_returns_empty_results(fresh):
    ids, scores = fresh.recommend([], [], k=4)
    assert ids.shape == (0, 4) and scores.shape == (0, 4)


@pytest.mark.slow
def test_live_sessions_are_limited_and_the_least_recently_used_dropped():
    model = gru4rec.GRU4Rec(**SMALL, max_live_sessions=3).fit(_events())
    model.recommend(["a", "b", "c"], [1, 2, 3], k=2)
    model.recommend(["a"], [4], k=2)  # a is now the most recently used
    model.recommend(["d"], [5], k=2)  # drops b
    assert model.live_sessions() == ["c", "a", "d"]
    fresh_b = model.recommend(["b"], [[]], k=3)
    zero = gru4rec.GRU4Rec(**SMALL, max_live_sessions=3).fit(_events()).recommend(["z"], [[]], k=3)
    np.testing.assert_array_equal(fresh_b[0], zero[0])


def test_max_live_sessions_is_validated():
    with pytest.raises(ValueError, match="max_live_sessions=0 is invalid"):
        gru4rec.GRU4Rec(**SMALL, max_live_sessions=0).fit(_events())


def test_device_top_k_equals_a_full_sort_of_predict_next_batch_scores(model):
    model.end_sessions()
    items = model.item_ids_[:6]
    ids, scores = model.recommend([f"t{i}" for i in range(6)], list(items), k=model.n_items_)
    full = model.predict_next_batch([f"u{i}" for i in range(6)], items, batch=6).to_numpy().T
    for row in range(6):
        np.testing.assert_allclose(scores[row], np.sort(full[row])[::-1], rtol=1e-5)
        assert list(model.item_map_.indices(ids[row])) == list(np.argsort(-full[row], kind="stable")) or \
            np.allclose(full[row][model.item_map_.indices(ids[row])], scores[row], rtol=1e-5)
    model.end_sessions()


def test_finiteness_check_finds_any_inf_or_nan_in_the_kept_rows_only():
    import pytensor
    import pytensor.tensor as pt

    from gru4rec_lib import optim

    a, b, v = pt.matrix("a", shape=(3, 2)), pt.matrix("b", shape=(3, 2)), pt.vector("v", shape=(3,))
    keep = pt.vector("keep", shape=(3,), dtype="bool")
    check = pytensor.function([a, b, v, keep], pt.all(pt.stack(optim.all_finite([a, b, v], keep))), mode="JAX")
    ok = np.ones((3, 2), np.float32)
    rows = np.array([True, False, True])
    assert check(ok, ok, np.ones(3, np.float32), rows)
    for bad in (np.inf, -np.inf, np.nan):
        for row, expected in ((0, False), (1, True), (2, False)):  # row 1 is not kept: not checked
            broken = ok.copy()
            broken[row, 1] = bad
            assert bool(check(ok, broken, np.ones(3, np.float32), rows)) is expected, (bad, row)
            vector = np.ones(3, np.float32)
            vector[row] = bad
            assert bool(check(ok, ok, vector, rows)) is expected, (bad, row)
    huge = np.full((3, 2), 3e38, np.float32)  # finite however large: no false alarm from overflow
    assert check(huge, huge, np.full(3, 3e38, np.float32), np.ones(3, bool))
