"""The GRU4Rec object: inference vs numpy, save/load, retrain, validation, docs.

One small model with string item ids is fitted once for the module; the save/load/retrain
tests work on copies loaded from its file, so they do not change it.
"""
import ast
import copy
import inspect
import os
import pickle
import re

import numpy as np
import numpy_reference as ref
import pandas as pd
import pytest
from state_capture import retrain_start_state

import gru4rec
from gru4rec_lib import synthetic

PARAMS = dict(loss="cross-entropy", final_act="softmax", constrained_embedding=True, layers=(8,), batch_size=4,
              n_sample=4, n_epochs=1, steps_per_call=8, show_progress=False, seed=3)


def _events():
    """Shuffled rows, a non-default index and an extra column: nothing a fit may touch."""
    events = synthetic.generate_sessions(n_sessions=60, n_items=12, mean_length=4, string_ids=True, seed=5)
    events = events.sample(frac=1.0, random_state=0)
    events.index = events.index * 10 + 3
    events["Extra"] = np.arange(len(events)) % 3
    return events


@pytest.fixture(scope="module")
def fitted():
    events = _events()
    untouched = copy.deepcopy(events)
    model = gru4rec.GRU4Rec(**PARAMS).fit(events)
    return model, events, untouched


def _state(model):
    return model.state_dict()


def _weights64(model):
    return {name: value.astype(np.float64) for name, value in _state(model).items() if "/" not in name}


# ---------------------------------------------------------------- fit and inference
def test_fit_leaves_the_callers_frame_unchanged(fitted):
    _, events, untouched = fitted
    pd.testing.assert_frame_equal(events, untouched, check_exact=True)
    assert list(events.index) == list(untouched.index)


def test_fitted_attributes(fitted):
    model, events, _ = fitted
    assert model.n_items_ == events["ItemId"].nunique() == len(model.item_ids_)
    assert set(model.item_ids_) == set(events["ItemId"])
    assert all(isinstance(i, str) for i in model.item_ids_)
    assert len(model.epoch_losses_) == 1 and np.isfinite(model.epoch_losses_[0])


def test_predict_next_batch_is_the_numpy_gru_with_softmax_and_carries_state(fitted):
    model, _, _ = fitted
    weights = _weights64(model)
    items = model.item_ids_
    idx = model.item_map_.indices

    def expected(item_ids, hidden):
        new = ref.forward(weights, "shared", 1, idx(item_ids), hidden)
        logits = new[-1] @ weights["Wy"].T + weights["By"]
        return np.array([ref.softmax(row) for row in logits]).T, new

    first_items, second_items = [items[0], items[3], items[0]], [items[5], items[5], items[1]]
    got1 = model.predict_next_batch(["p", "q", "r"], first_items, batch=3)
    want1, hidden = expected(first_items, [np.zeros((3, 8))])
    assert list(got1.index) == list(items) and got1.shape == (model.n_items_, 3)
    np.testing.assert_allclose(got1.to_numpy(), want1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got1.sum(axis=0), 1.0, rtol=1e-5)
    # slots 0 and 1 continue their sessions; slot 2 starts a new one from a zero state
    got2 = model.predict_next_batch(["p", "q", "s"], second_items, batch=3)
    hidden[0][2] = 0
    want2, _ = expected(second_items, hidden)
    np.testing.assert_allclose(got2.to_numpy(), want2, rtol=1e-4, atol=1e-6)
    subset = [items[2], items[7]]  # softmax over the given candidates only
    got3 = model.predict_next_batch(["x", "y", "z"], first_items, predict_for_item_ids=subset, batch=3)
    logits = ref.forward(weights, "shared", 1, idx(first_items), [np.zeros((3, 8))])[-1] @ \
        weights["Wy"][idx(subset)].T + weights["By"][idx(subset)]
    np.testing.assert_allclose(got3.to_numpy(), np.array([ref.softmax(r) for r in logits]).T, rtol=1e-4)
    assert list(got3.index) == subset


def test_using_a_model_before_fit_raises_not_fitted(tmp_path):
    model = gru4rec.GRU4Rec()
    assert issubclass(gru4rec.NotFittedError, ValueError)
    with pytest.raises(gru4rec.NotFittedError, match="not fitted"):
        model.predict_next_batch([1], [1], batch=1)
    with pytest.raises(gru4rec.NotFittedError, match="not fitted"):
        model.save(tmp_path / "never.npz")
    with pytest.raises(gru4rec.NotFittedError, match="not fitted"):
        model.fit(_events(), retrain=True)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- persistence
@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    path = fitted[0].save(folder / "model.npz")
    return folder, path


def test_save_writes_one_file_readable_without_pickle(saved):
    folder, path = saved
    assert os.listdir(folder) == ["model.npz"] and os.fspath(path).endswith("model.npz")
    with np.load(path, allow_pickle=False) as stored:
        for key in stored.files:
            assert stored[key].dtype != object, key  # any object array would need pickle to read
        assert stored["item_ids"].dtype.kind == "U"


def test_load_gives_identical_state_params_and_scores(fitted, saved, monkeypatch):
    model, _, _ = fitted
    _, path = saved

    def no_pickle(*args, **kwargs):
        raise AssertionError("load must not unpickle anything")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    loaded = gru4rec.GRU4Rec.load(path, device="cpu")
    monkeypatch.undo()
    original_state, loaded_state = _state(model), _state(loaded)
    assert set(loaded_state) == set(original_state)
    for key, value in original_state.items():
        np.testing.assert_array_equal(loaded_state[key], value, err_msg=key)
        assert loaded_state[key].dtype == value.dtype
    assert list(loaded.item_ids_) == list(model.item_ids_)
    assert all(isinstance(i, str) for i in loaded.item_ids_)
    assert {**loaded.get_params(), "device": None} == {**model.get_params(), "device": None}
    assert loaded.epoch_losses_ == pytest.approx(model.epoch_losses_)
    items = model.item_ids_
    sessions, inputs = ["a", "b", "c", "d"], [items[1], items[4], items[4], items[9]]
    for step in range(2):  # the second step checks the carried hidden state too
        want = model.predict_next_batch(sessions, inputs, batch=4)
        got = loaded.predict_next_batch(sessions, inputs, batch=4)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-6, atol=1e-7)
        inputs = inputs[::-1]


def test_failing_save_leaves_the_existing_file_and_no_temporary(fitted, tmp_path, monkeypatch):
    model = fitted[0]
    path = tmp_path / "model.npz"
    model.save(path)
    before = path.read_bytes()

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]


@pytest.mark.slow
def test_save_accepts_the_numpy_scalars_the_checks_accept(tmp_path):
    params = {**PARAMS, "layers": (np.int64(8),), "batch_size": np.int64(4), "seed": np.int64(5),
              "learning_rate": np.float32(0.05), "n_epochs": 0}
    model = gru4rec.GRU4Rec(**params).fit(_events())
    loaded = gru4rec.GRU4Rec.load(model.save(tmp_path / "model.npz"))
    assert loaded.layers == (8,) and loaded.batch_size == 4 and loaded.seed == 5
    assert loaded.learning_rate == pytest.approx(0.05)
    for key, value in _state(model).items():
        np.testing.assert_array_equal(_state(loaded)[key], value)


def test_load_on_a_missing_accelerator_raises_clearly(saved):
    import jax

    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="device='gpu'"):
        gru4rec.GRU4Rec.load(saved[1], device="gpu")


@pytest.fixture(scope="module")
def retrained(fitted, saved):
    """The saved model loaded and retrained on new sessions with five new items."""
    model = gru4rec.GRU4Rec.load(saved[1])
    before = _state(model)
    old_items = model.item_ids_[:6]  # the other old items do not occur in the new data
    rng = np.random.default_rng(0)
    new_items = [f"new_{i}" for i in range(5)]
    rows = []
    for session in range(30):
        pool = list(old_items) + new_items
        for t, item in enumerate(rng.choice(pool, size=4)):
            rows.append((1000 + session, item, 100.0 * session + t))
    new_data = pd.DataFrame(rows, columns=["SessionId", "ItemId", "Time"])
    grown = retrain_start_state(model, new_data)
    model.fit(new_data, retrain=True)
    return fitted[0], model, before, grown, new_data, new_items


def test_retrain_keeps_old_rows_and_adds_new_items(retrained):
    old_model, model, before, grown, _, new_items = retrained
    n_old = old_model.n_items_
    assert model.n_items_ == n_old + 5
    assert list(model.item_ids_[:n_old]) == list(old_model.item_ids_)
    assert sorted(model.item_ids_[n_old:]) == new_items
    assert set(grown) == set(before)
    for key, value in before.items():  # before the retraining steps: every old row, dense weight and state
        np.testing.assert_array_equal(grown[key][:len(value)] if value.ndim else grown[key], value, err_msg=key)
    bound = np.sqrt(6.0 / (model.n_items_ + 8))  # the init of Wy (n_items x 8, one block)
    new_rows = grown["Wy"][n_old:]
    assert np.abs(new_rows).max() <= bound and np.abs(new_rows).max() > 0
    assert not grown["By"][n_old:].any()
    assert not grown["acc/Wy"][n_old:].any() and not grown["acc/By"][n_old:].any()
    after = _state(model)
    assert not np.array_equal(after["Wy"], grown["Wy"])  # and the retraining did train


def test_retrain_rebuilds_popularity_and_keeps_every_item_recommendable(retrained, tmp_path):
    old_model, model, _, _, new_data, _ = retrained
    counts = new_data["ItemId"].value_counts()
    with np.load(model.save(tmp_path / "model.npz"), allow_pickle=False) as saved:  # the file keeps the supports
        support = dict(zip(model.item_ids_, saved["support"]))
    for item in model.item_ids_:
        assert support[item] == counts.get(item, 1)  # items absent from the new data keep support 1
    scores = model.predict_next_batch(["u", "v"], [model.item_ids_[0], "new_2"], batch=2)
    assert list(scores.index) == list(model.item_ids_)
    assert np.isfinite(scores.to_numpy()).all() and (scores.to_numpy() > 0).all()
    absent = [i for i in old_model.item_ids_ if i not in set(new_data["ItemId"])]
    assert absent and scores.loc[absent].notna().all().all()


def test_retrain_with_changed_shapes_raises(saved):
    model = gru4rec.GRU4Rec.load(saved[1])
    for change in [dict(layers=(5,)), dict(constrained_embedding=False, embedding=4), dict(adapt="adam")]:
        model.set_params(**{**PARAMS, **change})
        with pytest.raises(ValueError, match="cannot retrain after changing"):
            model.fit(_events(), retrain=True)


def test_retrain_with_momentum_switched_on_names_the_missing_state(saved):
    model = gru4rec.GRU4Rec.load(saved[1]).set_params(**{**PARAMS, "momentum": 0.3})
    with pytest.raises(ValueError, match=r"cannot retrain: the fitted model has no state \['velocity/"):
        model.fit(_events(), retrain=True)


# ---------------------------------------------------------------- validation
BAD_PARAMS = [
    (dict(loss="bpr_max"), r"loss='bpr_max' is invalid"),
    (dict(loss="cross-entropy", final_act="linear"), r"final_act='linear' is invalid.*softmax"),
    (dict(loss="xe_logit", final_act="softmax"), r"final_act='softmax' is invalid.*softmax_logit"),
    (dict(loss="bpr-max", final_act="softmax"), r"final_act='softmax' is invalid.*elementwise"),
    (dict(loss="bpr-max", final_act="elu"), r"unknown activation 'elu'"),
    (dict(hidden_act="sigmoid"), r"unknown activation 'sigmoid'"),
    (dict(n_sample=-1), r"n_sample=-1 is invalid"),
    (dict(sample_store=-5), r"sample_store=-5 is invalid"),
    (dict(batch_size=0), r"batch_size=0 is invalid"),
    (dict(steps_per_call=0), r"steps_per_call=0 is invalid"),
    (dict(n_epochs=-1), r"n_epochs=-1 is invalid"),
    (dict(layers=()), r"layers=\(\) is invalid"),
    (dict(layers=(8, 0)), r"layers=\(8, 0\) is invalid"),
    (dict(dropout_p_hidden=1.0), r"dropout_p_hidden=1.0 is invalid"),
    (dict(dropout_p_embed=-0.1), r"dropout_p_embed=-0.1 is invalid"),
    (dict(momentum=1.5), r"momentum=1.5 is invalid"),
    (dict(logq=1.5), r"logq=1.5 is invalid"),
    (dict(learning_rate=0), r"learning_rate=0 is invalid"),
    (dict(lmbd=-1.0), r"lmbd=-1.0 is invalid"),
    (dict(loss="bpr-max", final_act="linear", smoothing=0.1), r"smoothing=0.1 is invalid.*cross-entropy"),
    (dict(embedding=-2), r"embedding=-2 is invalid"),
    (dict(adapt="sgd"), r"adapt='sgd' is invalid"),
    (dict(adapt_params={"decay": 0.9}), r"adapt_params=\{'decay': 0.9\} is invalid.*epsilon"),
    (dict(adapt="adam", adapt_params={"beta": 0.9}), r"adapt_params=.* is invalid.*beta1"),
    (dict(adapt_params={"epsilon": 0.0}), r"adapt_params=.* is invalid: expected epsilon > 0"),
    (dict(adapt="rmsprop", adapt_params={"decay": 2}), r"adapt_params=.* is invalid: expected decay in \[0, 1\)"),
    (dict(adapt="adam", adapt_params={"beta2": 1.0}), r"adapt_params=.* is invalid: expected beta2 in \[0, 1\)"),
    (dict(adapt="adam", adapt_params={"beta1": -0.5}), r"adapt_params=.* is invalid: expected beta1 in \[0, 1\)"),
    (dict(seed="7"), r"seed='7' is invalid"),
    (dict(device="tpu9"), r"device='tpu9'"),
]


@pytest.mark.parametrize("params,message", BAD_PARAMS)
def test_bad_parameters_raise_naming_the_parameter(params, message):
    with pytest.raises(ValueError, match=message):
        gru4rec.GRU4Rec(**{**PARAMS, **params}).fit(_events())


def test_unknown_parameter_names_raise():
    with pytest.raises(ValueError, match=r"unknown parameter 'layer'.*did you mean.*'layers'"):
        gru4rec.GRU4Rec().set_params(layer=(10,))
    with pytest.raises(TypeError):
        gru4rec.GRU4Rec(n_hidden=10)


def _frame(**columns):
    base = {"SessionId": [1, 1, 2, 2], "ItemId": [5, 6, 5, 7], "Time": [0.0, 1.0, 2.0, 3.0]}
    return pd.DataFrame({**base, **columns})


BAD_DATA = [
    (_frame().drop(columns="ItemId"), KeyError, r"column 'ItemId' not found"),
    (_frame().rename(columns={"Time": "ts"}), KeyError, r"column 'Time' not found.*ts"),
    (_frame(ItemId=[5, np.nan, 5, 7]), ValueError, r"'ItemId' has 1 missing value"),
    (_frame(SessionId=[1, 1, None, 2]), ValueError, r"'SessionId' has 1 missing value"),
    (_frame(Time=[0.0, 1.0, np.nan, 3.0]), ValueError, r"'Time' has 1 missing value"),
    (_frame(Time=["a", "b", "c", "d"]), ValueError, r"'Time' has dtype (object|str); time must be numeric"),
    (_frame().iloc[:0], ValueError, r"no events"),
    (_frame(SessionId=[1, 2, 3, 4]), ValueError, r"no session with 2 or more events"),
]


@pytest.mark.parametrize("data,error,message", BAD_DATA)
def test_bad_data_raises_a_named_error(data, error, message):
    kept = data.copy(deep=True)
    with pytest.raises(error, match=message):
        gru4rec.GRU4Rec(**PARAMS).fit(data)
    pd.testing.assert_frame_equal(data, kept)


def test_other_column_names_are_used(fitted):
    renamed = _frame().rename(columns={"SessionId": "s", "ItemId": "i", "Time": "t"})
    with pytest.raises(KeyError, match="column 'SessionId' not found"):
        gru4rec.GRU4Rec(**PARAMS).fit(renamed)
    with pytest.raises(ValueError, match="no session with 2 or more events"):  # the columns are found
        gru4rec.GRU4Rec(**PARAMS, session_key="s", item_key="i", time_key="t").fit(renamed.iloc[[0, 2]])


# ---------------------------------------------------------------- documentation (STYLE §5)
def _documented_defaults():
    doc = inspect.getdoc(gru4rec.GRU4Rec)
    section = doc.split("Parameters\n----------\n")[1].split("\n\n")[0]
    defaults = {}
    for line in section.splitlines():
        found = re.match(r"^([\w, ]+) : .*?, default (.+)$", line)
        if not found:
            continue
        names = [n.strip() for n in found.group(1).split(",")]
        values = ast.literal_eval(f"({found.group(2)},)")
        assert len(values) == len(names), line
        defaults.update(zip(names, values))
    return defaults


def test_documented_defaults_match_the_signature():
    signature = {name: p.default for name, p in inspect.signature(gru4rec.GRU4Rec).parameters.items()}
    documented = _documented_defaults()
    assert set(documented) == set(signature), "every parameter documented once, nothing extra"
    for name, value in signature.items():
        assert documented[name] == value and type(documented[name]) is type(value), name
    assert gru4rec.PARAM_NAMES == tuple(signature)


def test_get_and_set_params_round_trip():
    model = gru4rec.GRU4Rec(layers=(7, 3), loss="cross-entropy", final_act="softmax")
    params = model.get_params()
    assert params["layers"] == (7, 3) and params["final_act"] == "softmax"
    clone = gru4rec.GRU4Rec(**params)
    assert clone.get_params() == params
    assert clone.set_params(n_epochs=3) is clone and clone.n_epochs == 3


def test_steps_per_call_defaults_to_16_on_a_cpu_and_keeps_a_given_value():
    """K steps per call: None resolves per device (16 on a CPU, where the looped program beat one
    step per call on every published shape, bench/README.md); a given K is kept."""
    assert gru4rec.GRU4Rec(device="cpu").config().steps_per_call == 16
    assert gru4rec.GRU4Rec(device="cpu", steps_per_call=1).config().steps_per_call == 1
