"""End-to-end tests of the command line (run.py) and the example scripts, on generated files.

GRU4Rec fits are tiny (8 units, 1 epoch, 4 samples) but each costs a few seconds of compilation,
so the module shares files and one trained model between tests.
"""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gru4rec_lib import baselines
import evaluation
import gru4rec
from gru4rec_lib import cli
from gru4rec_lib import synthetic
from scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
TINY = "layers=8,n_epochs=1,n_sample=4,batch_size=16,sample_store=2000"
METRIC = re.compile(r"(Recall@\d+|MRR@\d+|points|dropped|seconds): (\S+)")


def result_lines(out):
    """[{'Recall@5': 0.1234, ..., 'points': 182.0, 'file': path}, ...]: one dict per test file.

    A file's result is its 'Recall@N: x MRR@N: y' lines (one per cut-off) closed by the line
    'points: n dropped: d seconds: s file: path'.
    """
    results, current = [], {}
    for line in out.splitlines():
        if line.startswith("Recall@"):
            current.update({name: float(value) for name, value in METRIC.findall(line)})
        elif line.startswith("points: "):
            metrics, _, path = line.partition(" file: ")
            results.append({**current, **{k: float(v) for k, v in METRIC.findall(metrics)}, "file": path})
            current = {}
    return results


def expected(result):
    """What the CLI prints for an in-memory `evaluate` result (6 decimals, as the reference)."""
    values = {f"Recall@{n}": round(v, 6) for n, v in result["recall"].items()}
    values.update({f"MRR@{n}": round(v, 6) for n, v in result["mrr"].items()})
    return {**values, "points": result["n_points"], "dropped": result["n_dropped"]}


def printed(parsed):
    return {k: v for k, v in parsed.items() if k not in ("seconds", "file")}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """train/test splits in several formats, plus new data with items the first model lacks."""
    folder = tmp_path_factory.mktemp("data")
    events = synthetic.generate_sessions(n_sessions=400, n_items=30, seed=0)
    train, test = synthetic.split_by_time(events, test_fraction=0.2)
    new = synthetic.generate_sessions(n_sessions=100, n_items=40, seed=1)
    paths = {"train": folder / "train.tsv", "test": folder / "test.tsv", "test_csv": folder / "test.csv",
             "train_csv": folder / "train.csv", "train_parquet": folder / "train.parquet",
             "train_pkl": folder / "train.pkl", "new": folder / "new.txt", "folder": folder}
    train.to_csv(paths["train"], sep="\t", index=False)
    test.to_csv(paths["test"], sep="\t", index=False)
    test.iloc[: len(test) // 2].to_csv(paths["test_csv"], index=False)
    renamed = train.rename(columns={"SessionId": "sess", "ItemId": "item", "Time": "ts"})
    renamed.assign(extra="x").to_csv(paths["train_csv"], index=False)
    train.to_parquet(paths["train_parquet"])
    train.to_pickle(paths["train_pkl"])
    new.to_csv(paths["new"], sep="\t", index=False)
    return {**paths, "train_df": train, "test_df": test, "new_df": new}


@pytest.fixture(scope="module")
def trained(files):
    """A model trained and saved by the CLI's `run`; returns (in-memory model, saved path)."""
    path = files["folder"] / "model.npz"
    argv = [str(files["train"]), "-ps", TINY, "--seed", "3", "-s", str(path), "-q"]
    args = cli.build_parser().parse_args(argv)
    model, results = cli.run(args, cli.model_params(args))
    assert results == [] and path.is_file()
    return model, path


def test_train_tsv_with_typed_params(trained):
    model, _ = trained
    assert model.get_params()["layers"] == (8,) and model.seed == 3 and model.n_items_ == 30
    assert len(model.epoch_stats_) == 1


def test_load_and_evaluate_two_files_matches_in_memory_model(trained, files, capsys):
    model, path = trained
    code = cli.main(["-l", str(path), "-t", str(files["test"]), str(files["test_csv"]),
                     "-m", "1", "5", "20", "-e", "conservative", "-q"])
    assert code == 0
    lines = result_lines(capsys.readouterr().out)
    assert [line["file"] for line in lines] == [str(files["test"]), str(files["test_csv"])]
    for line, test in zip(lines, (files["test"], files["test_csv"])):
        reference = evaluation.evaluate(model, test, cutoffs=(1, 5, 20), mode="conservative")
        assert printed(line) == expected(reference)
        assert 0 < line["Recall@1"] <= line["Recall@5"] <= line["Recall@20"] <= 1
    assert lines[0]["points"] > lines[1]["points"] > 0


def test_run_py_program_ends_with_its_output_written(trained, files, tmp_path):
    """`python run.py` ends its process without the interpreter's teardown (`cli.end_process`):
    its status, its whole output through pipes and its saved model are still those of `main`."""
    model, path = trained
    saved = tmp_path / "again.npz"
    argv = [sys.executable, str(ROOT / "run.py"), str(files["train"]), "-ps", TINY, "--seed", "3",
            "-s", str(saved), "-t", str(files["test"]), "-m", "5", "20", "-q"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (line,) = result_lines(done.stdout)
    assert line["file"] == str(files["test"])
    assert "epoch 1: loss" in done.stderr  # the log, through its own stream
    with np.load(path) as first, np.load(saved) as second:  # the same seed: the same weights
        assert sorted(first.files) == sorted(second.files)
        for name in first.files:
            np.testing.assert_array_equal(first[name], second[name])
    reloaded = gru4rec.GRU4Rec.load(saved)
    assert printed(line) == expected(evaluation.evaluate(reloaded, files["test"], cutoffs=(5, 20)))
    failed = subprocess.run([sys.executable, str(ROOT / "run.py"), str(tmp_path / "missing.tsv"), "-q"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert failed.returncode == 2 and "error: TRAIN_PATH file not found" in failed.stderr


def test_same_seed_gives_identical_model_from_pickle(trained, files, tmp_path, capsys):
    _, path = trained  # trained from the TSV file with --seed 3
    again = tmp_path / "again.npz"
    assert cli.main([str(files["train_pkl"]), "-ps", TINY, "--seed", "3", "-s", str(again), "-q",
                     "--allow-pickle"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Trained GRU4Rec: 1 epoch in [\d.]+ s .*final loss [\d.]+, \d+ events/s", out)
    with np.load(path) as first, np.load(again) as second:
        weights = [key for key in first.files if key.startswith("state/")]
        assert weights and all(np.array_equal(first[key], second[key]) for key in weights)


def test_param_file_and_string_and_column_names_from_csv(files, tmp_path, capsys):
    param_file = tmp_path / "tiny.txt"
    param_file.write_text("# tiny\nlayers=8/8\nn_epochs=3\nn_sample=4\nsample_store=2000\n"
                          "loss=cross-entropy\nfinal_act=softmax\n")
    saved = tmp_path / "m.npz"
    code = cli.main([str(files["train_csv"]), "-pf", str(param_file), "-ps", "n_epochs=1,batch_size=16",
                     "-sk", "sess", "-ik", "item", "-tk", "ts", "-s", str(saved), "-q"])
    assert code == 0 and "1 epoch " in capsys.readouterr().out
    params = gru4rec.GRU4Rec.load(saved).get_params()
    assert params["layers"] == (8, 8) and params["n_epochs"] == 1 and params["loss"] == "cross-entropy"
    assert (params["session_key"], params["item_key"], params["time_key"]) == ("sess", "item", "ts")
    assert params["show_progress"] is False


def test_train_parquet(files, capsys):
    pytest.importorskip("pyarrow")
    code = cli.main([str(files["train_parquet"]), "--model", "pop", "-t", str(files["test"]), "-m", "5", "-q"])
    assert code == 0
    (line,) = result_lines(capsys.readouterr().out)
    reference = evaluation.evaluate(baselines.Pop().fit(files["train_df"]), files["test_df"], cutoffs=(5,))
    assert printed(line) == expected(reference)
    assert line["points"] == (files["test_df"].groupby("SessionId").size() - 1).sum()


def test_retrain_on_new_items(trained, files, tmp_path, capsys):
    model, path = trained
    retrained = tmp_path / "retrained.npz"
    code = cli.main([str(files["new"]), "-l", str(path), "--retrain", "-ps", "learning_rate=0.05",
                     "-s", str(retrained), "-t", str(files["new"]), "-m", "5", "-q"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Trained GRU4Rec: 1 epoch " in out and len(result_lines(out)) == 1
    new_model = gru4rec.GRU4Rec.load(retrained)
    all_items = set(files["train_df"]["ItemId"]) | set(files["new_df"]["ItemId"])
    assert set(new_model.item_ids_.tolist()) == all_items and new_model.n_items_ == len(all_items) > 30
    assert list(new_model.item_ids_[:30]) == list(model.item_ids_)  # old items keep their indices
    assert new_model.learning_rate == 0.05


@pytest.mark.parametrize("name, cls, extra", [("pop", baselines.Pop, []),
                                              ("vsknn", baselines.VSKNN, ["-ps", "k=20,weighting=quadratic"])])
def test_baseline_by_name(files, name, cls, extra, capsys):
    argv = [str(files["train"]), "--model", name, "-t", str(files["test"]), "-m", "1", "10", "-q", *extra]
    code = cli.main(argv)
    assert code == 0
    out = capsys.readouterr().out
    assert f"Trained {cls.__name__} in" in out
    (line,) = result_lines(out)
    model = cls(**({"k": 20, "weighting": "quadratic"} if extra else {})).fit(files["train_df"])
    assert printed(line) == expected(evaluation.evaluate(model, files["test_df"], cutoffs=(1, 10)))


def usage_error(argv, capsys, code=2):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == code
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["-ps", "lossx=bpr-max"], "unknown parameter 'lossx'; close matches: loss"),
    (["-ps", "n_epochs=abc"], "parameter 'n_epochs': cannot read 'abc' as an integer"),
    (["-ps", "layers"], "expected name=value"),
    (["--model", "pop", "-ps", "k=5"], "unknown parameter 'k'"),
    (["--model", "pop", "-s", "x.npz"], "-s applies to --model gru4rec only"),
    (["--model", "vsknn", "--seed", "1"], "--seed applies to --model gru4rec only"),
    (["-t", "missing.tsv"], "-t test file not found: missing.tsv"),
    (["-m", "0"], "cut-offs must be positive"),
    (["--retrain"], "--retrain needs -l MODEL"),
    (["--model", "pop", "-uk", "UserId"], "-uk applies to --model gru4rec only"),
    (["--history", "missing.tsv"], "--history file not found: missing.tsv"),
    (["-s", "no/such/folder/m.npz"], "does not exist"),
])
def test_argument_errors(files, argv, message, capsys):
    err = usage_error([str(files["train"]), *argv], capsys)
    assert "gru4rec: error:" in err and message in err


def test_file_and_mode_errors(files, trained, tmp_path, capsys):
    _, path = trained
    assert "TRAIN_PATH file not found: nope.tsv" in usage_error(["nope.tsv"], capsys)
    assert "unknown suffix '.json'" in usage_error([str(tmp_path / "train.json")], capsys)
    assert "nothing to do" in usage_error([], capsys)
    assert "with -l they need TRAIN_PATH and --retrain" in usage_error(["-l", str(path), "-ps", "n_epochs=2"], capsys)
    assert "add --retrain" in usage_error([str(files["train"]), "-l", str(path)], capsys)
    assert "-l model file not found" in usage_error(["-l", str(tmp_path / "none.npz")], capsys)
    assert "-l applies to --model gru4rec only" in usage_error(["-l", str(path), "--model", "pop"], capsys)
    bad_file = tmp_path / "bad.txt"
    bad_file.write_text("layers=8\nn_epoch=1\n")
    err = usage_error([str(files["train"]), "-pf", str(bad_file)], capsys)
    assert f"{bad_file}, line 2: unknown parameter 'n_epoch'; close matches: n_epochs" in err


def test_output_one_line_per_cutoff_then_counts(trained, files, capsys):
    model, path = trained
    assert cli.main(["-l", str(path), "-t", str(files["test"]), "-m", "20", "5", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    reference = evaluation.evaluate(model, files["test"], cutoffs=(20, 5))
    assert lines[-3:] == [
        f"Recall@20: {reference['recall'][20]:.6f} MRR@20: {reference['mrr'][20]:.6f}",
        f"Recall@5: {reference['recall'][5]:.6f} MRR@5: {reference['mrr'][5]:.6f}",
        f"points: {reference['n_points']} dropped: {reference['n_dropped']} seconds: "
        f"{lines[-1].split('seconds: ')[1].split()[0]} file: {files['test']}"]


def test_a_repeated_cut_off_prints_its_line_again_and_a_failing_test_file_is_named(trained, files, tmp_path, capsys):
    model, path = trained
    assert cli.main([str(path), "-l", "-t", str(files["test"]), "-m", "5", "20", "5", "-g", "gru4rec", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["Recall@5", "Recall@20", "Recall@5"]  # as the authors
    unknown = pd.DataFrame({"SessionId": [1, 1], "ItemId": [10**9, 10**9 + 1], "Time": [0, 1]})
    unknown.to_csv(tmp_path / "unknown.tsv", sep="\t", index=False)
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(path), "-l", "-t", str(files["test"]), str(tmp_path / "unknown.tsv"), "-q"])
    assert exit_.value.code == 1
    assert f"-t {tmp_path / 'unknown.tsv'}: the test data has no session" in capsys.readouterr().err


def test_primary_metric_line_per_test_file(trained, files, capsys):
    model, path = trained
    argv = [str(path), "-l", "-t", str(files["test"]), str(files["test_csv"]), "-m", "10", "1", "-pm", "mrr",
            "-lpm", "-q"]
    assert cli.main(argv) == 0
    primary = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PRIMARY METRIC: ")]
    want = [evaluation.evaluate(model, test, cutoffs=(10,))["mrr"][10] for test in (files["test"], files["test_csv"])]
    assert [float(line.split(": ")[1]) for line in primary] == want  # full precision: repr of the float
    assert cli.main([str(path), "-l", "-t", str(files["test"]), "-q"]) == 0
    assert "PRIMARY METRIC" not in capsys.readouterr().out  # only with -lpm
    assert cli.main([str(path), "-l", "-t", str(files["test"]), "-pm", "mrr", "-lpm", "-q"]) == 0
    out = capsys.readouterr().out.splitlines()  # without -m: the four default cut-offs, and @20 as the authors'
    assert [line.split(":")[0] for line in out[:4]] == ["Recall@1", "Recall@5", "Recall@10", "Recall@20"]
    assert out[-1] == f"PRIMARY METRIC: {evaluation.evaluate(model, files['test'], cutoffs=(20,))['mrr'][20]!r}"


def test_reference_flags_reach_the_model(files):
    parser = cli.build_parser()
    args = parser.parse_args([str(files["train"]), "--parameter_string", "layers=8", "-ss", "1234", "-d", "cuda:0",
                              "--item_key", "I", "--session_key", "S", "--time_key", "T"])
    assert cli.model_params(args) == {"layers": (8,), "session_key": "S", "item_key": "I", "time_key": "T",
                                      "device": "gpu", "sample_store": 1234}
    args = parser.parse_args(["model.npz", "--load_model", "-t", "test.tsv"])
    cli.model_path_first(parser, args)
    assert (args.load, args.train, args.test) == ("model.npz", None, ["test.tsv"])
    args = parser.parse_args(["-l", "model.npz", "new.tsv", "--retrain"])
    cli.model_path_first(parser, args)
    assert (args.load, args.train) == ("model.npz", "new.tsv")


def test_reference_flag_errors(files, capsys):
    assert "a bare -l loads the path given before it" in usage_error(["-l", "-t", str(files["test"])], capsys)
    assert "CUDA_VISIBLE_DEVICES=1" in usage_error([str(files["train"]), "-d", "cuda:1"], capsys)
    assert "-ss must be an integer >= 0" in usage_error([str(files["train"]), "-ss", "-5"], capsys)
    assert "-ss applies to --model gru4rec only" in usage_error([str(files["train"]), "--model", "pop",
                                                                 "-ss", "10"], capsys)


def test_device_not_found(files, capsys):
    import jax
    if any(device.platform == "gpu" for device in jax.devices()):
        pytest.skip("a GPU is present")
    assert "--device gpu: " in usage_error([str(files["train"]), "--device", "gpu"], capsys)
    assert "--device gpu: " in usage_error([str(files["train"]), "-d", "cuda:0"], capsys)


def test_help_warns_about_pickles(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and ".pkl/.pickle" in out and "only use pickles you trust" in out


def test_failures_while_running_exit_1(files, capsys):
    err = usage_error([str(files["train"]), "-ps", "loss=foo", "-q"], capsys, code=1)
    assert "gru4rec: error: loss='foo' is invalid" in err
    err = usage_error([str(files["train"]), "-ik", "Item", "-q"], capsys, code=1)
    assert "gru4rec: error: column 'Item' not found" in err


@pytest.mark.slow
def test_demo_prints_table(capsys):
    demo = load_script("examples/demo.py")
    assert demo.main(["--sessions", "300", "--epochs", "1", "--layers", "8"]) == 0
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines()]
    header, *rows = [cells for cells in table if cells[:1] in (["model"], ["GRU4Rec"], ["Pop"])]
    assert header == ["model", "Recall@1", "MRR@1", "Recall@5", "MRR@5", "Recall@20", "MRR@20", "train", "s"]
    assert [row[0] for row in rows] == ["GRU4Rec", "Pop"]
    for row in rows:
        values = [float(v) for v in row[1:7]]
        assert all(0 <= v <= 1 for v in values) and values[0] <= values[2] <= values[4]
        assert values[1] <= values[3] <= values[5] <= values[4]


def test_rsc15_runner_uses_paramfile_and_overrides(files, tmp_path, capsys):
    data = tmp_path / "rsc15"
    data.mkdir()
    files["train_df"].to_csv(data / "rsc15_train_full.txt", sep="\t", index=False)
    files["test_df"].to_csv(data / "rsc15_test.txt", sep="\t", index=False)
    runner = load_script("examples/rsc15/run_rsc15.py")
    assert runner.main([str(data), "rsc15_xe", "-ps", TINY, "--save-dir", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "== rsc15_xe (Reported" in out and "Recall@20 0.7283" in out
    (line,) = result_lines(out)
    assert set(line) >= {"Recall@1", "Recall@5", "Recall@10", "Recall@20", "MRR@20"}
    params = gru4rec.GRU4Rec.load(tmp_path / "rsc15_xe.npz").get_params()
    assert params["loss"] == "cross-entropy" and params["logq"] == 1.0 and params["layers"] == (8,)


@pytest.mark.slow
def test_user_histories_continue_from_the_training_file(tmp_path, capsys):
    """-uk trains on user sequences; evaluation continues from TRAIN_PATH unless --history none."""
    events = synthetic.generate_sessions(n_sessions=300, n_items=30, seed=5)
    events["UserId"] = events.SessionId % 40
    last = events.groupby("UserId").SessionId.transform("max")
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    events[events.SessionId < last].to_csv(train, sep="\t", index=False)
    events[events.SessionId == last].to_csv(test, sep="\t", index=False)
    common = [str(train), "-ps", TINY + ",bptt=2", "-uk", "UserId", "-t", str(test), "-q", "-m", "5"]
    assert cli.main(common) == 0
    continued = result_lines(capsys.readouterr().out)[0]
    assert cli.main(common + ["--history", "none"]) == 0
    from_zero = result_lines(capsys.readouterr().out)[0]
    n_users = events.UserId.nunique()
    assert continued["points"] == from_zero["points"] + n_users  # each user's first test event too
    assert "--history needs a model trained on user histories" in usage_error(
        [str(train), "-ps", TINY, "-t", str(test), "--history", str(train), "-q"], capsys, code=1)
