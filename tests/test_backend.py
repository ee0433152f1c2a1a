import jax
import numpy as np
import pytest

from gru4rec_lib import backend
import gru4rec
from gru4rec_lib import synthetic


@pytest.fixture
def restore_jax_cache_config():
    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    previous = {key: getattr(jax.config, key) for key in keys}
    yield
    for key, value in previous.items():
        jax.config.update(key, value)
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()  # later tests must not write into this test's folder


@pytest.mark.slow
def test_compilation_cache_writes_programs_to_the_folder(tmp_path, restore_jax_cache_config, monkeypatch):
    monkeypatch.setenv("GRU4REC_COMPILATION_CACHE", str(tmp_path / "from-env"))
    assert backend.enable_compilation_cache() == str(tmp_path / "from-env")
    folder = backend.enable_compilation_cache(tmp_path / "cache")
    assert folder == str(tmp_path / "cache") and jax.config.jax_compilation_cache_dir == folder
    events = synthetic.generate_sessions(n_sessions=60, n_items=12, seed=0)
    gru4rec.GRU4Rec(layers=(4,), n_epochs=1, n_sample=3, batch_size=4, show_progress=False, seed=1).fit(events)
    assert any((tmp_path / "cache").iterdir())  # the training program was written


def test_resolve_device_rejects_unknown_and_missing_devices():
    assert backend.resolve_device(None).platform == jax.devices()[0].platform
    assert backend.resolve_device("cpu").platform == "cpu"
    with pytest.raises(ValueError, match="device='tpu' is not one of"):
        backend.resolve_device("tpu")
    if not any(d.platform == "gpu" for d in jax.devices()):
        with pytest.raises(ValueError, match="requested but JAX finds none"):
            backend.resolve_device("gpu")


def test_shared_on_device_keeps_values_and_static_shape():
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    var = backend.shared_on_device(value, "v", backend.resolve_device("cpu"))
    assert var.type.shape == (2, 3)
    np.testing.assert_array_equal(np.asarray(var.get_value(borrow=True)), value)


@pytest.mark.slow
def test_command_line_compilation_cache_flag(tmp_path, restore_jax_cache_config):
    from gru4rec_lib import cli

    events = synthetic.generate_sessions(n_sessions=60, n_items=12, seed=0)
    events.to_csv(tmp_path / "train.tsv", sep="\t", index=False)
    code = cli.main([str(tmp_path / "train.tsv"), "-ps", "layers=4,n_epochs=1,n_sample=3,batch_size=4", "-q",
                     "--compilation-cache", str(tmp_path / "xla")])
    assert code == 0 and any((tmp_path / "xla").iterdir())


# --- the compilation cache is on by default (a fresh process each: the cache is set up once per process) ---

FIT_SCRIPT = ("from gru4rec_lib import synthetic; import gru4rec; "
              "events = synthetic.generate_sessions(n_sessions=60, n_items=12, seed=0); "
              "gru4rec.GRU4Rec(layers=(4,), n_epochs=1, n_sample=3, batch_size=4, show_progress=False).fit(events)")


def _fit_in_fresh_process(tmp_path, **env):
    import os
    import subprocess
    import sys
    from pathlib import Path

    environ = {k: v for k, v in os.environ.items() if k != "GRU4REC_COMPILATION_CACHE"}
    environ.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), **env)
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", FIT_SCRIPT], cwd=root, env=environ, check=True, timeout=300)


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow  # a fresh process or a whole benchmark run: in the slow set
def test_compilation_cache_is_on_by_default_and_reused(tmp_path):
    folder = tmp_path / "xdg" / "gru4rec" / "jax"
    assert backend.default_cache_folder({"XDG_CACHE_HOME": str(tmp_path / "xdg")}) == folder
    _fit_in_fresh_process(tmp_path)
    first = _files(folder)
    assert first  # the first fit wrote its programs
    _fit_in_fresh_process(tmp_path)
    assert _files(folder) == first  # the second fit of the same shapes compiled from the cache


@pytest.mark.slow  # a fresh process or a whole benchmark run: in the slow set
def test_compilation_cache_opt_out_and_own_folder(tmp_path):
    _fit_in_fresh_process(tmp_path, GRU4REC_COMPILATION_CACHE="off")
    assert not (tmp_path / "xdg").exists()
    _fit_in_fresh_process(tmp_path, GRU4REC_COMPILATION_CACHE=str(tmp_path / "mine"))
    assert _files(tmp_path / "mine") and not (tmp_path / "xdg").exists()


def test_fit_and_evaluation_leave_no_generated_source_files_in_the_temporary_folder(tmp_path, monkeypatch):
    """PyTensor's JAX linker writes each generated function's source to a temporary file it keeps;
    compiling through the library removes them (a tuning run compiles thousands)."""
    import tempfile

    import evaluation

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    events = synthetic.generate_sessions(n_sessions=60, n_items=12, seed=0)
    model = gru4rec.GRU4Rec(layers=(4,), n_epochs=1, n_sample=3, batch_size=4, show_progress=False, seed=1).fit(events)
    evaluation.evaluate(model, events, cutoffs=(5,))
    model.recommend(["s"], [events.ItemId.iloc[0]], k=3)
    assert list(tmp_path.iterdir()) == [] and tempfile.tempdir == str(tmp_path)


# --- compiled programs kept in the cache folder: a later fit of the same graph skips PyTensor's rewriting ---

PROGRAM_FIT = dict(layers=(4,), n_epochs=2, n_sample=3, batch_size=4, dropout_p_hidden=0.3, momentum=0.2,
                   show_progress=False, seed=3)


def _fit_logged(events, caplog, **params):
    caplog.clear()
    with caplog.at_level("DEBUG", logger="gru4rec_lib.programs"):
        model = gru4rec.GRU4Rec(**{**PROGRAM_FIT, **params}).fit(events)
    return model, [r.getMessage() for r in caplog.records if r.name == "gru4rec_lib.programs"]


def _programs(folder):
    return sorted((folder / "gru4rec-programs").glob("*.gru4rec-program"))


def _kinds(log):
    """'saved' / 'loaded' / 'ignoring' per message."""
    return [m.split()[2] if m.startswith("compiled program") else m.split()[0] for m in log]


def test_a_fit_of_the_same_graph_loads_the_saved_programs_with_the_same_numbers(tmp_path, restore_jax_cache_config,
                                                                                 caplog):
    events = synthetic.generate_sessions(n_sessions=80, n_items=15, seed=2)
    backend.disable_compilation_cache()
    plain = gru4rec.GRU4Rec(**PROGRAM_FIT).fit(events)  # compiled by PyTensor, nothing kept
    backend.enable_compilation_cache(tmp_path)
    first, log = _fit_logged(events, caplog)
    saved = {path: path.read_bytes() for path in _programs(tmp_path)}
    assert set(_kinds(log)) == {"saved"} and len(log) == len(saved) >= 1  # training (numpy draws a CPU's store)
    second, log = _fit_logged(events, caplog)
    assert _kinds(log) == ["loaded"] * len(saved)
    assert {path: path.read_bytes() for path in _programs(tmp_path)} == saved
    for model in (first, second):  # dropout's random stream and the negative samples included
        assert model.epoch_losses_ == plain.epoch_losses_
        for key, value in plain.state_dict().items():
            np.testing.assert_array_equal(model.state_dict()[key], value, err_msg=key)
    # the loaded programs keep training the same model: a retrain continues as the plain one does
    plain.fit(events, retrain=True)
    second.fit(events, retrain=True)
    np.testing.assert_array_equal(second.state_dict()["Wy"], plain.state_dict()["Wy"])


@pytest.mark.slow
def test_another_graph_gets_its_own_program(tmp_path, restore_jax_cache_config, caplog):
    events = synthetic.generate_sessions(n_sessions=80, n_items=15, seed=2)
    backend.enable_compilation_cache(tmp_path)
    _, log = _fit_logged(events, caplog)
    n_first = len(log)
    _, log = _fit_logged(events, caplog, momentum=0.0)  # no velocity: another training graph
    assert _kinds(log).count("saved") == 1 and len(_programs(tmp_path)) == n_first + 1
    fewer = synthetic.generate_sessions(n_sessions=80, n_items=9, seed=2)
    _, log = _fit_logged(fewer, caplog)  # fewer items: other shapes everywhere, nothing loaded
    assert set(_kinds(log)) == {"saved"} and len(log) >= n_first and len(_programs(tmp_path)) == n_first + 1 + len(log)


def test_hyperparameter_values_are_inputs_of_the_kept_program(tmp_path, restore_jax_cache_config, caplog):
    """Fits that differ only in the values of continuous hyperparameters (a tuning study's trials)
    share one training program, and each trains with its own values: the same weights as a fit
    compiled afresh with those values."""
    events = synthetic.generate_sessions(n_sessions=80, n_items=15, seed=2)
    first = dict(learning_rate=0.1, momentum=0.2, dropout_p_hidden=0.3, lmbd=0.02, logq=1.0, bpreg=1.0, grad_cap=1.0)
    other = dict(learning_rate=0.07, momentum=0.35, dropout_p_hidden=0.1, lmbd=0.01, logq=0.5, bpreg=0.3,
                 grad_cap=2.0)
    backend.disable_compilation_cache()
    plain = gru4rec.GRU4Rec(**{**PROGRAM_FIT, **first}).fit(events)
    fresh = gru4rec.GRU4Rec(**{**PROGRAM_FIT, **other}).fit(events)
    backend.enable_compilation_cache(tmp_path)
    _, log = _fit_logged(events, caplog, **first)
    assert set(_kinds(log)) == {"saved"}
    loaded, log = _fit_logged(events, caplog, **other)
    assert set(_kinds(log)) == {"loaded"}
    assert loaded.epoch_losses_ == fresh.epoch_losses_ != plain.epoch_losses_
    for key, value in fresh.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value, err_msg=key)


# options that change the training graph by a constant, a property, a shape or the scan's structure
GRAPH_VARIANTS = [dict(adapt_params={"epsilon": 1e-3}), dict(final_act="elu-0.5"), dict(layers=(4, 3)),
                  dict(loss="cross-entropy", final_act="softmax", smoothing=0.1, logq=1.0), dict(bptt=3),
                  dict(steps_per_call=2)]


@pytest.mark.slow
def test_fits_of_other_options_sharing_a_folder_train_as_if_compiled_afresh(tmp_path, restore_jax_cache_config,
                                                                           caplog):
    """No two graphs share a program name: fits of many options, one after the other with one
    folder, each either save their own program or load one that gives exactly the numbers of the
    same fit compiled by PyTensor (a program named without some option would not)."""
    events = synthetic.generate_sessions(n_sessions=80, n_items=15, seed=2)
    backend.enable_compilation_cache(tmp_path)
    _fit_logged(events, caplog)
    loaded = []
    for variant in GRAPH_VARIANTS + [dict(learning_rate=0.05)]:  # the last one: the first fit's program
        model, log = _fit_logged(events, caplog, **variant)
        if "loaded" in _kinds(log):
            loaded.append((variant, model))
    backend.disable_compilation_cache()
    for variant, model in loaded:
        fresh = gru4rec.GRU4Rec(**{**PROGRAM_FIT, **variant}).fit(events)
        assert model.epoch_losses_ == fresh.epoch_losses_, variant
        for key, value in fresh.state_dict().items():
            np.testing.assert_array_equal(model.state_dict()[key], value, err_msg=f"{variant} {key}")
    assert loaded  # at least the run-time learning rate's fit


@pytest.mark.slow
def test_a_damaged_program_file_is_ignored_and_replaced(tmp_path, restore_jax_cache_config, caplog):
    events = synthetic.generate_sessions(n_sessions=80, n_items=15, seed=2)
    backend.enable_compilation_cache(tmp_path)
    reference, _ = _fit_logged(events, caplog)
    path = max(_programs(tmp_path), key=lambda p: p.stat().st_size)  # the training program
    good = path.read_bytes()
    for damaged in (good[: len(good) // 2], b"not a program", good[:-1] + bytes([good[-1] ^ 1])):
        path.write_bytes(damaged)
        model, log = _fit_logged(events, caplog)
        assert sorted(_kinds(log)) == ["ignoring", "saved"]  # the only program (numpy draws the store)
        assert model.epoch_losses_ == reference.epoch_losses_
        _, log = _fit_logged(events, caplog)
        assert _kinds(log) == ["loaded"]  # the file was replaced


@pytest.mark.slow
def test_no_program_is_kept_with_the_cache_off(tmp_path, restore_jax_cache_config, caplog):
    events = synthetic.generate_sessions(n_sessions=80, n_items=15, seed=2)
    backend.disable_compilation_cache()
    _, log = _fit_logged(events, caplog)
    assert log == [] and backend.programs_folder() is None


def test_evaluation_loads_its_saved_program_with_the_same_numbers(tmp_path, restore_jax_cache_config, caplog):
    import evaluation

    events = synthetic.generate_sessions(n_sessions=80, n_items=15, seed=2)
    backend.disable_compilation_cache()
    model = gru4rec.GRU4Rec(**PROGRAM_FIT).fit(events)
    plain = evaluation.evaluate(model, events, cutoffs=(1, 5))
    backend.enable_compilation_cache(tmp_path)
    results = []
    for expected in ("saved", "loaded"):
        copy = gru4rec.GRU4Rec(**PROGRAM_FIT).load_state_dict(model.state_dict(), item_ids=model.item_ids_)
        caplog.clear()
        with caplog.at_level("DEBUG", logger="gru4rec_lib.programs"):
            results.append(evaluation.evaluate(copy, events, cutoffs=(1, 5)))
        assert _kinds([r.getMessage() for r in caplog.records if r.name == "gru4rec_lib.programs"]) == [expected]
    for result in results:
        assert (result["recall"], result["mrr"]) == (plain["recall"], plain["mrr"])


@pytest.mark.parametrize("kept", [False, True])
def test_a_repeated_function_runs_its_graph_once_per_slice_carrying_its_updates(tmp_path, restore_jax_cache_config,
                                                                                kept):
    """compile_fn(repeat=K): one call runs the graph on each of K input slices in turn, each pass
    seeing the shared values the previous pass updated, and stacks the outputs; kept in the
    cache folder, a second compile loads the same program."""
    import pytensor.tensor as pt

    if kept:
        backend.enable_compilation_cache(tmp_path)
    else:
        backend.disable_compilation_cache()
    device = backend.resolve_device("cpu")
    xs = np.arange(12, dtype=np.float32).reshape(4, 3)
    expected_totals = np.cumsum(xs, axis=0)  # the running total after each pass
    for _ in range(2):  # kept: the second compile loads the program the first one saved
        total = backend.shared_on_device(np.zeros(3, np.float32), "total", device)
        x = pt.tensor("x", shape=(1, 3), dtype="float32")
        new = total + x[0] * 1
        fn = backend.compile_fn([x], [new.sum()[None], new[None]], {total: new}, reuse=True, repeat=4)
        sums, rows = fn(xs)
        np.testing.assert_array_equal(np.asarray(sums), expected_totals.sum(axis=1))
        np.testing.assert_array_equal(np.asarray(rows), expected_totals)
        np.testing.assert_array_equal(np.asarray(total.get_value()), expected_totals[-1])
        fn(xs)  # a second call goes on from the updated total
        np.testing.assert_array_equal(np.asarray(total.get_value()), 2 * expected_totals[-1])
    saved = list((tmp_path / "gru4rec-programs").glob("*")) if kept else []
    assert len(saved) == (1 if kept else 0)


@pytest.mark.parametrize("kept", [False, True])
@pytest.mark.parametrize("repeat", [1, 3])
def test_a_program_computes_its_after_outputs_on_the_values_a_call_leaves(tmp_path, restore_jax_cache_config, kept,
                                                                        repeat):
    """compile_fn(after=...): outputs of the shared variables alone, computed once per call on the
    values the call's passes leave (the updated ones and the others), returned after the outputs;
    the same from a kept program. `after` may read neither an explicit input nor a shared variable
    the program does not read."""
    import pytensor.tensor as pt

    if kept:
        backend.enable_compilation_cache(tmp_path)
    else:
        backend.disable_compilation_cache()
    device = backend.resolve_device("cpu")
    xs = np.arange(3 * repeat, dtype=np.float32).reshape(repeat, 3) - 2
    for _ in range(2):  # kept: the second compile loads the program the first one saved
        total = backend.shared_on_device(np.zeros(3, np.float32), "total", device)
        scale = backend.shared_on_device(np.float32(2), "scale", device)
        x = pt.tensor("x", shape=(1, 3), dtype="float32")
        new = total + x[0] * (scale / 2)
        fn = backend.compile_fn([x], new.sum()[None], {total: new}, reuse=True, repeat=repeat,
                                after=[total.max() * scale, pt.all(total < 100)])
        sums, largest, small = fn(xs)
        running = np.cumsum(xs, axis=0)
        np.testing.assert_array_equal(np.asarray(sums), running.sum(axis=1))
        assert float(largest) == 2 * running[-1].max() and bool(small)
        _, largest, _ = fn(xs)  # the next call goes on from the updated total
        assert float(largest) == 2 * (2 * running[-1]).max()
    other = backend.shared_on_device(np.float32(1), "other", device)
    for after in ([x.sum()], [other * 2]):
        with pytest.raises(ValueError, match="only shared variables"):
            backend.compile_fn([x], new.sum()[None], {total: new}, repeat=repeat, after=after)


@pytest.mark.parametrize("kept, draw_on", [(False, "device"), (True, "device"), (False, "host")])
def test_a_store_refill_of_the_rows_still_needed_draws_what_a_whole_refill_would(tmp_path, restore_jax_cache_config,
                                                                                 kept, draw_on, monkeypatch):
    """A refill of the sample store told how many rows the fit still uses draws only those (a
    power of two, at least 64): the first rows of a whole draw, after which the generator goes on
    as after a whole draw (its programs share its state, with the cache on or off; numpy draws in
    blocks, here of 50 rows)."""
    from gru4rec_lib import sampling

    monkeypatch.setattr(sampling.SampleStore, "HOST_BLOCK", 20 * 50)
    if kept:
        backend.enable_compilation_cache(tmp_path)
    else:
        backend.disable_compilation_cache()

    def store():
        return sampling.SampleStore(np.arange(1, 300), 0.5, n_sample=20, store_size=20 * 1000, steps_per_call=1,
                                    rng=np.random.default_rng(5), device=backend.resolve_device("cpu"),
                                    draw_on=draw_on)

    def contents(s):
        return np.array(s.var.get_value(borrow=True))

    whole, part = store(), store()
    rows, refilled = part.rows_for(np.ones(1, bool), needed=70)
    assert refilled and rows.tolist() == [0] and part.filled == 128
    whole.refill()
    assert whole.filled == 1000
    np.testing.assert_array_equal(contents(part)[:128], contents(whole)[:128])
    for _ in range(127):  # the 128 drawn rows are used before the next refill
        assert not part.rows_for(np.ones(1, bool))[1]
    assert part.rows_for(np.ones(1, bool))[1] and part.filled == 1000  # needed unknown: a whole draw
    whole.refill()
    np.testing.assert_array_equal(contents(part), contents(whole))
    assert store().compile(needed=5000) == 1000 and store().compile(needed=1) == 64


def test_settled_values_are_their_inputs_under_the_jax_linker():
    """`backend.Settled` (XLA's optimisation barrier) changes no value, for one input and several,
    and a graph reading its outputs computes what it computes without it."""
    import pytensor.tensor as pt

    a, b = pt.vector("a"), pt.matrix("b")
    one = backend.Settled()(a * 2)
    first, second = backend.Settled()(a + 1, b * b)
    fn = backend.compile_fn([a, b], [one, first * 3, second.sum(axis=0)], reuse=False)
    av, bv = np.arange(3, dtype=np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)
    got = fn(av, bv)
    np.testing.assert_array_equal(got[0], av * 2)
    np.testing.assert_array_equal(got[1], (av + 1) * 3)
    np.testing.assert_array_equal(got[2], (bv * bv).sum(axis=0))
    assert backend.settled({}) == {}
    assert list(backend.settled({"x": a, "y": b})) == ["x", "y"]


def test_programs_on_a_cpu_are_built_without_pytensor_elementwise_composites():
    """On a CPU PyTensor's elementwise fusion is left to XLA (`backend.compile_fn`): no composite
    operation in the compiled graph, and the values of the plain chain."""
    import pytensor.tensor as pt
    from pytensor.scalar import Composite
    from pytensor.tensor.elemwise import Elemwise

    x = pt.vector("x")
    y = pt.exp(x * 2 + 1) / (1 + pt.abs(x))
    fn = backend.compile_fn([x], y, reuse=False)
    ops = [node.op for node in fn.maker.fgraph.apply_nodes]
    assert not [op for op in ops if isinstance(op, Elemwise) and isinstance(op.scalar_op, Composite)]
    assert sum(isinstance(op, Elemwise) for op in ops) >= 4  # the chain is still there, op by op
    xv = np.linspace(-1, 1, 5).astype(np.float32)
    np.testing.assert_allclose(fn(xv), np.exp(xv * 2 + 1) / (1 + np.abs(xv)), rtol=1e-6)
