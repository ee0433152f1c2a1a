"""Model files, pickles and the command line's save/load flow (issue 13, cases 3, 4, 5, 9).

One tiny model is fitted and saved for the module; damaged copies of its file are written per test.
"""
import json
import os

import numpy as np
import pytest

import evaluation
import gru4rec
from gru4rec_lib import cli, sessiondata, synthetic

SMALL = dict(layers=(8,), n_epochs=1, n_sample=4, batch_size=8, steps_per_call=4, show_progress=False, seed=3)
TINY = "layers=8,n_epochs=1,n_sample=4,batch_size=8,sample_store=2000"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("persist")
    train, test = synthetic.split_by_time(synthetic.generate_sessions(n_sessions=120, n_items=15, seed=0))
    paths = {"folder": folder, "train": folder / "train.tsv", "test": folder / "test.tsv",
             "pkl": folder / "train.pkl", "pickle": folder / "test.pickle", "model": folder / "model.npz"}
    train.to_csv(paths["train"], sep="\t", index=False)
    test.to_csv(paths["test"], sep="\t", index=False)
    train.to_pickle(paths["pkl"])
    test.to_pickle(paths["pickle"])
    model = gru4rec.GRU4Rec(**SMALL).fit(train)
    model.save(paths["model"])
    return {**paths, "model_obj": model, "train_df": train}


def _arrays(path):
    with np.load(path, allow_pickle=False) as f:
        return {key: f[key] for key in f.files}


def _write(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def usage_error(argv, capsys, code=2):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == code
    return capsys.readouterr().err


# ---------------------------------------------------------------- 3. pickles need an opt-in
def test_loading_a_pickle_needs_allow_pickle(files):
    with pytest.raises(ValueError, match=r"pickle.*runs code.*allow_pickle=True"):
        sessiondata.load_events(files["pkl"])
    assert len(sessiondata.load_events(files["pkl"], allow_pickle=True)) == len(files["train_df"])
    with pytest.raises(ValueError, match="allow_pickle=True"):
        gru4rec.GRU4Rec(**SMALL).fit(files["pkl"])
    with pytest.raises(ValueError, match="allow_pickle=True"):
        evaluation.evaluate(files["model_obj"], files["pickle"])
    assert evaluation.evaluate(files["model_obj"], files["pickle"], allow_pickle=True)["n_points"] > 0


def test_command_line_refuses_pickles_without_the_flag(files, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a pickle was read")

    monkeypatch.setattr(sessiondata.pd, "read_pickle", never)
    err = usage_error([str(files["pkl"]), "-ps", TINY, "-q"], capsys)
    assert "--allow-pickle" in err and "runs code" in err
    err = usage_error(["-l", str(files["model"]), "-t", str(files["pickle"]), "-q"], capsys)
    assert "--allow-pickle" in err


def test_command_line_reads_pickles_with_the_flag(files, capsys):
    assert cli.main(["-l", str(files["model"]), "-t", str(files["pickle"]), "--allow-pickle", "-q"]) == 0
    assert "Recall@" in capsys.readouterr().out


# ---------------------------------------------------------------- 4. load validates the file
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", bytes(range(256)) * 4, "half"])
def test_unreadable_files_get_one_clear_error(files, tmp_path, content):
    path = tmp_path / "bad.npz"
    data = files["model"].read_bytes()
    path.write_bytes(data[: len(data) // 2] if content == "half" else content)
    with pytest.raises(ValueError, match=r"^not a gru4rec model file: .*bad\.npz") as info:
        gru4rec.GRU4Rec.load(path)
    assert "allow_pickle" not in str(info.value)


def _damaged(files, tmp_path, change):
    arrays = _arrays(files["model"])
    change(arrays)
    return _write(tmp_path / "damaged.npz", arrays)


def _set(key, value):
    return lambda arrays: arrays.__setitem__(key, value)


def _drop(key):
    return lambda arrays: arrays.pop(key)


def _params(**changes):
    def change(arrays):
        params = json.loads(str(arrays["params_json"]))
        arrays["params_json"] = np.array(json.dumps({**params, **changes}))
    return change


DAMAGE = [
    (_drop("state/Wy"), r"missing.*'Wy'"),
    (_drop("params_json"), r"missing.*'params_json'"),
    (_drop("item_ids"), r"missing.*'item_ids'"),
    (lambda a: a.__setitem__("state/Wy", a["state/Wy"][:5]), r"'Wy' has shape \(5, 8\).*expected \(15, 8\)"),
    (lambda a: a.__setitem__("item_ids", a["item_ids"][:10]), r"has shape \(15, \d+\).*expected \(10, \d+\)"),
    (lambda a: a.__setitem__("state/Wh_0", a["state/Wh_0"][:, :9]), r"'Wh_0' has shape \(8, 9\)"),
    (lambda a: a["state/By"].__setitem__(2, np.nan), r"'By'.*not finite"),
    (lambda a: a.__setitem__("state/Wy", a["state/Wy"].astype(np.float64)), r"'Wy'.*float32"),
    (lambda a: a.__setitem__("item_ids", np.zeros(15, np.int64)), r"item ids.*unique"),
    (_set("format_version", np.array(0)), r"format_version 0"),
    (_set("format_version", np.array(-3)), r"format_version -3"),
    (_set("format_version", np.array(99)), r"format_version 99"),
    (_set("format_version", np.array("one")), r"format_version"),
    (_set("params_json", np.array("{not json")), r"params_json"),
    (_set("params_json", np.array("[1, 2]")), r"params_json"),
    (_params(layers=[9]), r"'W\w_0' has shape"),
    (_params(nonsense=1), r"unknown parameter 'nonsense'"),
    (_params(loss="nope"), r"loss='nope' is invalid"),
    (lambda a: a.__setitem__("state/extra", np.zeros(3, np.float32)), r"unexpected.*'extra'"),
    (_set("support", np.zeros(3)), r"support"),
    (_set("support", np.array(["1"] * 15)), r"support has dtype <U1: expected numbers"),
    (_set("item_ids", np.r_[np.arange(14.0), np.nan]), r"item ids include NaN"),
    (_set("epoch_losses", np.array([np.nan, 1.0])), r"epoch_losses must be one row of finite numbers"),
    (lambda a: a["state/acc/Wy"].__setitem__((0, 0), -1.0), r"'acc/Wy' has negative values"),
]


@pytest.mark.parametrize("change,message", DAMAGE)
def test_load_validates_everything_and_names_what_is_wrong(files, tmp_path, change, message):
    path = _damaged(files, tmp_path, change)
    with pytest.raises(ValueError, match=r"^not a gru4rec model file: .*damaged\.npz") as info:
        gru4rec.GRU4Rec.load(path)
    assert info.match(message)


def test_load_of_an_intact_file_gives_the_same_state(files):
    loaded = gru4rec.GRU4Rec.load(files["model"])
    for key, value in files["model_obj"].state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value)


def test_a_file_holding_a_pickle_is_refused_without_running_it(files, tmp_path):
    arrays = _arrays(files["model"])
    arrays["item_ids"] = np.array([object()] * 15, dtype=object)
    path = _write(tmp_path / "damaged.npz", arrays)
    with pytest.raises(ValueError, match=r"^not a gru4rec model file") as info:
        gru4rec.GRU4Rec.load(path)
    assert "allow_pickle" not in str(info.value)


# ---------------------------------------------------------------- 5. the command line's save/load flow
def test_save_target_is_checked_before_training(files, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(gru4rec.GRU4Rec, "fit", never)
    err = usage_error([str(files["train"]), "-ps", TINY, "-s", str(files["folder"]), "-q"], capsys)
    assert f"-s {files['folder']}" in err and "directory" in err
    assert not [p for p in os.listdir(files["folder"]) if p.startswith(".tmp")]


def test_a_failed_save_still_evaluates_and_exits_1(files, tmp_path, capsys, monkeypatch):
    def broken(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gru4rec.GRU4Rec, "save", broken)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(files["train"]), "-ps", TINY, "-s", str(tmp_path / "m.npz"), "-t", str(files["test"]), "-q"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 1
    assert "Recall@" in captured.out
    error_lines = [line for line in captured.err.splitlines() if "error" in line]
    assert len(error_lines) == 1 and "-s" in error_lines[0] and "No space left" in error_lines[0]
    assert "Traceback" not in captured.err


def test_loading_a_damaged_file_is_a_one_line_error(files, tmp_path, capsys):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"garbage")
    err = usage_error(["-l", str(path), "-t", str(files["test"]), "-q"], capsys, code=1)
    assert "not a gru4rec model file" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1


def test_loading_with_nothing_to_do_says_so(files, capsys):
    err = usage_error(["-l", str(files["model"])], capsys)
    assert "nothing to do" in err and "-t" in err


def test_errors_name_the_command_line_flag(files, capsys):
    err = usage_error([str(files["train"]), "-ps", TINY, "-ik", "Item", "-q"], capsys, code=1)
    assert "-ik" in err and "item_key=" not in err


# ---------------------------------------------------------------- 9. failed saves leave nothing behind
def test_save_into_a_missing_folder_names_the_users_path(files, tmp_path):
    target = tmp_path / "no" / "such" / "model.npz"
    with pytest.raises(FileNotFoundError) as info:
        files["model_obj"].save(target)
    assert str(target) in str(info.value) and ".tmp" not in str(info.value)


def test_save_onto_a_directory_leaves_no_temporary_file(files, tmp_path):
    (tmp_path / "model.npz").mkdir()
    with pytest.raises(OSError) as info:
        files["model_obj"].save(tmp_path / "model.npz")
    assert "model.npz" in str(info.value) and ".tmp" not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


def test_save_writes_the_parameters_the_model_was_fitted_with(files, tmp_path):
    model = gru4rec.GRU4Rec.load(files["model"])
    fitted = model.get_params()
    model.set_params(learning_rate=0.5, max_live_sessions=3)  # takes effect at the next fit
    loaded = gru4rec.GRU4Rec.load(model.save(tmp_path / "m.npz"))
    assert loaded.get_params() == fitted


def test_a_folder_that_cannot_take_the_file_names_the_users_path(files):
    target = "/proc/self/model.npz"  # an existing folder in which no one, not even root, creates files
    with pytest.raises(OSError) as info:
        files["model_obj"].save(target)
    assert target in str(info.value) and ".tmp" not in str(info.value)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_saved_files_get_the_umask_mode_or_keep_the_replaced_files(files, tmp_path):
    previous = os.umask(0o027)
    try:
        files["model_obj"].save(tmp_path / "new.npz")
        assert (tmp_path / "new.npz").stat().st_mode & 0o777 == 0o640
        (tmp_path / "old.npz").write_bytes(b"")
        (tmp_path / "old.npz").chmod(0o604)
        files["model_obj"].save(tmp_path / "old.npz")
        assert (tmp_path / "old.npz").stat().st_mode & 0o777 == 0o604
    finally:
        os.umask(previous)
    assert gru4rec.GRU4Rec.load(tmp_path / "old.npz").n_items_ == files["model_obj"].n_items_


@pytest.mark.parametrize("embedding", [0, 4], ids=["one_hot", "separate"])
def test_adam_models_with_per_row_counts_save_load_and_reload_their_state(tmp_path, embedding):
    """Adam keeps one step count per item row (shape (n_items,)): save/load and load_state_dict accept it."""
    events = synthetic.generate_sessions(n_sessions=40, n_items=10, seed=1)
    model = gru4rec.GRU4Rec(layers=(4,), embedding=embedding, adapt="adam", n_epochs=1, n_sample=2, batch_size=4,
                            show_progress=False, seed=2).fit(events)
    state = model.state_dict()
    assert state["count/Wy"].shape == (model.n_items_,) and state["count/Wy"].max() >= 1
    loaded = gru4rec.GRU4Rec.load(model.save(tmp_path / "adam.npz")).state_dict()
    copy = gru4rec.GRU4Rec(**model.get_params()).load_state_dict(state, item_ids=model.item_ids_).state_dict()
    for other in (loaded, copy):
        assert other.keys() == state.keys()
        for key, value in state.items():
            np.testing.assert_array_equal(other[key], value, err_msg=key)
