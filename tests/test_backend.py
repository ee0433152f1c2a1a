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


def test_command_line_compilation_cache_flag(tmp_path, restore_jax_cache_config):
    from gru4rec_lib import cli

    events = synthetic.generate_sessions(n_sessions=60, n_items=12, seed=0)
    events.to_csv(tmp_path / "train.tsv", sep="\t", index=False)
    code = cli.main([str(tmp_path / "train.tsv"), "-ps", "layers=4,n_epochs=1,n_sample=3,batch_size=4", "-q",
                     "--compilation-cache", str(tmp_path / "xla")])
    assert code == 0 and any((tmp_path / "xla").iterdir())
