"""The one model interface: GRU4Rec and the six baselines, used by evaluation through it alone."""
import ast
import pathlib

import numpy as np
import pytest

import evaluation
import gru4rec
from gru4rec_lib import baselines, sessiondata, synthetic
from gru4rec_lib.interface import SessionModel

ROOT = pathlib.Path(__file__).resolve().parents[1]
GRU = dict(loss="cross-entropy", final_act="softmax", constrained_embedding=True, layers=(32,), batch_size=16,
           n_sample=16, learning_rate=0.1, n_epochs=3, steps_per_call=8, show_progress=False, seed=1)
MODELS = {
    "GRU4Rec": lambda: gru4rec.GRU4Rec(**GRU), "Pop": baselines.Pop, "SessionPop": baselines.SessionPop,
    "ItemKNN": baselines.ItemKNN, "SKNN": baselines.SKNN, "VSKNN": baselines.VSKNN,
    "MarkovChain": baselines.MarkovChain,
}
LEARNS = {"GRU4Rec", "ItemKNN", "SKNN", "VSKNN", "MarkovChain"}  # Pop and SessionPop know no transition


@pytest.fixture(scope="module")
def planted():
    events = synthetic.generate_sessions(n_sessions=1500, n_items=100, mean_length=5, n_successors=2,
                                         noise=0.1, popularity_exponent=0.8, seed=11)
    return synthetic.split_by_time(events, test_fraction=0.15)


@pytest.fixture(scope="module")
def fitted(planted):
    return {name: make().fit(planted[0]) for name, make in MODELS.items()}


def _host_recall(model, test, cutoff, batch_size):
    """Recall@cutoff through score_step alone, slot by slot in numpy (a brute-force re-derivation)."""
    data = sessiondata.SessionData.from_events(sessiondata.load_events(test), sessiondata.ItemMap(model.item_ids_),
                                               drop_unknown=True)
    model.reset_state()
    hits = points = 0
    for chunk in sessiondata.session_parallel_schedule(data, np.arange(data.n_sessions), batch_size, 1):
        scores = np.asarray(model.score_step(chunk.reset[0], chunk.inputs[0], chunk.active[0]), np.float64)
        rows = np.flatnonzero(chunk.active[0])
        target = scores[rows, chunk.targets[0, rows]]
        hits += int(((scores[rows] > target[:, None]).sum(axis=1) < cutoff).sum())
        points += len(rows)
    return hits / points, points


@pytest.mark.parametrize("name", list(MODELS))
def test_planted_successors_through_the_interface(name, planted, fitted):
    model, pop = fitted[name], fitted["Pop"]
    assert isinstance(model, SessionModel)
    result = evaluation.evaluate(model, planted[1], cutoffs=(5,), batch_size=32, steps_per_call=4)
    recall, pop_recall = result["recall"][5], evaluation.evaluate(pop, planted[1], cutoffs=5)["recall"][5]
    if name in LEARNS:
        assert recall > pop_recall + 0.1, (name, recall, pop_recall)
    else:
        assert recall < pop_recall + 0.05, (name, recall, pop_recall)
    host, points = _host_recall(model, planted[1], 5, batch_size=32)
    assert points == result["n_points"]
    assert host == pytest.approx(recall, abs=2 / points)  # float32 ties may differ by a point or so


@pytest.mark.slow
def test_device_scan_equals_the_host_loop_of_score_step(planted, fitted):
    """GRU4Rec's compiled score_steps and the interface's default host loop give the same ranks."""
    model = fitted["GRU4Rec"]
    data = sessiondata.SessionData.from_events(sessiondata.load_events(planted[1]), model.item_map_, drop_unknown=True)
    ranking = evaluation.Ranking((1, 5, 10), "median")
    for candidates in (None, np.array([0, 3, 4, 9, 20], np.int32)):
        got, want = [], []
        for runner, out in ((model.score_steps, got), (lambda *a, **k: SessionModel.score_steps(model, *a, **k), want)):
            model.reset_state()
            for chunk in sessiondata.session_parallel_schedule(data, np.arange(data.n_sessions), 8, 4):
                totals, values = runner(chunk, ranking, candidates, keep_values=True)
                out.append((np.asarray(totals, float), np.asarray(values, float)))
        for (t1, v1), (t2, v2) in zip(got, want):
            np.testing.assert_allclose(v1, v2, atol=1.0)  # a float32 tie at most
            np.testing.assert_allclose(t1, t2, atol=1.0)
        assert np.mean([np.mean(v1 == v2) for (_, v1), (_, v2) in zip(got, want)]) > 0.99


def test_candidates_changed_in_place_are_taken_by_value(planted, fitted):
    """score_steps with one candidate array changed in place between calls ranks as a fresh copy would."""
    model = fitted["GRU4Rec"]
    data = sessiondata.SessionData.from_events(sessiondata.load_events(planted[1]), model.item_map_, drop_unknown=True)
    chunk = next(sessiondata.session_parallel_schedule(data, np.arange(data.n_sessions), 8, 4))
    ranking = evaluation.Ranking((5,), "standard")
    candidates = np.array([0, 3, 4, 9, 20], np.int32)

    def ranks(cand):
        model.reset_state()
        return np.asarray(model.score_steps(chunk, ranking, cand, keep_values=True)[1])
    ranks(candidates)
    candidates[:] = [1, 2, 5, 6, 7]
    np.testing.assert_array_equal(ranks(candidates), ranks(candidates.copy()))


def test_a_new_fit_continues_no_slot_state_of_the_old_weights(planted):
    train = planted[0]
    model = gru4rec.GRU4Rec(layers=(4,), n_epochs=1, n_sample=4, batch_size=16, show_progress=False).fit(train)
    items = model.item_ids_[:2]
    model.predict_next_batch(["s"], items[:1], batch=1)
    model.score_step([True], [0], [True])
    model.fit(train, retrain=True)
    continued = model.predict_next_batch(["s"], items[1:], batch=1)  # the same session id as before the retrain
    slot = model.score_step([False], [1], [True])
    model.reset_state()
    fresh = model.predict_next_batch(["t"], items[1:], batch=1)
    np.testing.assert_array_equal(continued.to_numpy(), fresh.to_numpy())
    np.testing.assert_array_equal(slot, model.score_step([True], [1], [True]))


@pytest.mark.parametrize("name", list(MODELS))
def test_reset_state_of_given_slots_starts_only_them_afresh(name, fitted):
    model = fitted[name]
    model.reset_state()
    items = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    first = np.ones(3, bool)
    for t in range(2):
        model.score_step(first if t == 0 else ~first, items[t], np.ones(3, bool))
    model.reset_state(np.array([1]))
    after = np.asarray(model.score_step(~first, items[2], np.ones(3, bool)))
    model.reset_state()
    fresh = np.asarray(model.score_step(first, items[2], np.ones(3, bool)))
    np.testing.assert_allclose(after[1], fresh[1], rtol=1e-5, atol=1e-6)  # slot 1 forgot its history
    if name in LEARNS - {"MarkovChain", "ItemKNN"}:  # these see only the last item
        assert not np.allclose(after[0], fresh[0])  # slot 0 kept its history


def test_gru4rec_score_step_equals_predict_next_batch(fitted):
    model = fitted["GRU4Rec"]
    model.reset_state()
    sessions, items = [[1, 2], [1, 3], [1, 3]], [[0, 5], [7, 8], [9, 10]]
    for t, (ids, idx) in enumerate(zip(sessions, items)):
        reset = np.ones(2, bool) if t == 0 else np.array([a != b for a, b in zip(ids, sessions[t - 1])])
        mine = np.asarray(model.score_step(reset, np.array(idx), np.ones(2, bool)))
        theirs = model.predict_next_batch(ids, model.item_ids_[idx], batch=2).to_numpy().T
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_score_step_checks_its_arguments(fitted):
    model = fitted["GRU4Rec"]
    with pytest.raises(ValueError, match="input_idx"):
        model.score_step([True], [model.n_items_], [True])
    with pytest.raises(ValueError, match="length"):
        model.score_step([True, True], [0], [True])
    with pytest.raises(sessiondata.NotFittedError):
        gru4rec.GRU4Rec().score_step([True], [0], [True])
    with pytest.raises(TypeError, match="reset must hold booleans"):  # 'False' is a true string
        model.score_step(["False"], [0], [True])
    with pytest.raises(ValueError, match="active must hold booleans"):
        model.score_step([True], [0], [2])
    np.testing.assert_array_equal(model.score_step([1], [0], [1]), model.score_step([True], [0], [True]))


def test_evaluation_uses_only_the_public_interface():
    tree = ast.parse((ROOT / "evaluation.py").read_text())
    private = sorted({node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                      and node.attr.startswith("_") and not node.attr.startswith("__")
                      and not (isinstance(node.value, ast.Name) and node.value.id == "self")})
    assert private == []
    switches = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("isinstance", "type") and ast.unparse(node.args[0]) == "model"]
    assert switches == []  # no switch on the model's class
    imports = [alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
               for alias in node.names]
    assert "gru4rec" not in imports and not any(name.startswith("_") for name in imports)
