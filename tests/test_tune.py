"""The tuner on real Optuna storages: workers sharing a study, resuming a killed study, pruning, PostgreSQL."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from gru4rec_lib import synthetic, tune

pytestmark = pytest.mark.slow  # whole fits per test: in the slow set

ROOT = Path(__file__).resolve().parent.parent
SPACE = "learning_rate float 0.0001 0.3 log\nmomentum float 0 0.5 step=0.1\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    events = synthetic.generate_sessions(n_sessions=300, n_items=60, seed=4)
    train, valid = synthetic.split_by_time(events, test_fraction=0.2)
    train.to_csv(folder / "train.tsv", sep="\t", index=False)
    valid.to_csv(folder / "valid.tsv", sep="\t", index=False)
    (folder / "space.txt").write_text(SPACE)
    return folder


def command(files, out, n, *extra, epochs=1):
    return [str(files / "train.tsv"), str(files / "valid.tsv"), "-sp", str(files / "space.txt"),
            "-ps", f"layers=8,n_epochs={epochs},n_sample=4,batch_size=16,loss=cross-entropy,final_act=softmax",
            "--metric", "mrr@10", "-n", str(n), "--seed", "1", "-o", str(out / "best.txt"),
            "--json", str(out / "trials.json"), *extra]


def load(storage, name="gru4rec"):
    return optuna.load_study(study_name=name, storage=storage)


def check_exactly(study, n):
    """n counted trials numbered uniquely, all finished; the rest were never run (no parameters)."""
    trials = study.get_trials()
    counted = tune.counted_trials(trials)
    assert len(counted) == n and len({t.number for t in counted}) == n
    assert all(t.state.name == "COMPLETE" for t in counted)
    for t in trials:
        if t not in counted:
            assert t.user_attrs.get("surplus") or t.state.name == "FAIL"
            assert t.user_attrs.get("surplus") is None or "mrr" not in t.user_attrs  # surplus: never fitted
    return counted


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(files, tmp_path, caplog):
    caplog.set_level("INFO")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    code = tune.main(command(files, tmp_path, 6, "--workers", "2", "--storage", storage, "--pruner", "none",
                             "--plots", str(tmp_path / "plots"), epochs=2))
    assert code == 0
    counted = check_exactly(load(storage), 6)
    assert len({t.user_attrs["pid"] for t in counted}) == 2  # both processes ran trials
    report = json.loads((tmp_path / "trials.json").read_text())
    assert [t["number"] for t in report["trials"]] == [t.number for t in counted]
    assert report["states"]["COMPLETE"] == 6 and report["n_trials"] == 6
    best = max(counted, key=lambda t: t.value)
    assert report["best_trial"] == best.number and "mrr@10" in (tmp_path / "best.txt").read_text()
    lines = [r.getMessage() for r in caplog.records if "/6 (#" in r.getMessage()]
    assert lines and all("mrr@10" in line and "best" in line for line in lines)
    for name in ("optimization_history.png", "param_importances.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_a_killed_study_resumes_and_reruns_the_lost_trial(files, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # 40 epochs: a trial lasts about a second even when it reuses its first trial's compiled program
    argv = command(files, tmp_path, 4, "--storage", storage, "--heartbeat", "1", "--pruner", "none", epochs=40)
    worker = subprocess.Popen([sys.executable, "-m", "gru4rec_lib.tune", *argv], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # kill it in the middle of its second trial
            time.sleep(0.2)
            try:
                trials = load(storage).get_trials()
            except (KeyError, Exception):  # the study does not exist yet
                continue
            states = [t.state.name for t in trials]
            # the running trial must have drawn its parameters: a trial killed before that has none to rerun
            if states.count("COMPLETE") >= 1 and any(t.state.name == "RUNNING" and t.params for t in trials):
                break
        else:
            pytest.fail("the worker did not get to its second trial")
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    killed = [t for t in load(storage).get_trials() if t.state.name == "RUNNING"]
    assert len(killed) == 1
    assert tune.main(argv) == 0  # the same command again
    study = load(storage)
    counted = check_exactly(study, 4)
    lost = study.get_trials()[killed[0].number]
    assert lost.state.name == "FAIL" and lost not in counted
    rerun = [t for t in counted if t.system_attrs.get("failed_trial") == lost.number]
    assert len(rerun) == 1 and rerun[0].params == lost.params  # the same trial, run again


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_the_same_call_continues_a_study_and_refuses_other_settings(files, tmp_path, kind):
    storage = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'study.log'}"
    space = tune.read_space(files / "space.txt", tune.gru4rec.GRU4Rec().get_params())
    fixed = {"layers": (8,), "n_epochs": 1, "n_sample": 4, "batch_size": 16}
    args = (files / "train.tsv", files / "valid.tsv", space, fixed, "mrr@10")
    tune.tune(*args, n_trials=1, seed=3, storage=storage, pruner="none")
    study = tune.tune(*args, n_trials=2, seed=3, storage=storage, pruner="none")
    assert [t.number for t in tune.counted_trials(study.get_trials())] == [0, 1]
    assert tune.tune(*args, n_trials=2, seed=3, storage=storage).trials == study.trials  # done: nothing to run
    with pytest.raises(ValueError, match="made with another metric"):
        tune.tune(*args[:4], "recall@20", n_trials=3, storage=storage)
    other = pd.read_csv(files / "valid.tsv", sep="\t").iloc[:-3]  # other validation data, same file name
    other.to_csv(tmp_path / "valid.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match="made with another data"):  # not the old study's results for it
        tune.tune(args[0], tmp_path / "valid.tsv", *args[2:], n_trials=3, storage=storage)
    with pytest.raises(ValueError, match="made with another mode"):
        tune.tune(*args, n_trials=3, storage=storage, mode="conservative")


def test_trials_are_scored_in_the_tie_mode_asked_for(files):
    space = tune.read_space(files / "space.txt", tune.gru4rec.GRU4Rec().get_params())
    fixed = {"layers": (8,), "n_epochs": 1, "n_sample": 4, "batch_size": 16, "final_act": "relu", "loss": "bpr-max"}
    study = tune.tune(files / "train.tsv", files / "valid.tsv", space, fixed, "recall@20", n_trials=1, seed=3,
                      pruner="none", mode="conservative")
    model = tune.gru4rec.GRU4Rec(**{**fixed, **tune.best_params(study), "show_progress": False}).fit(files / "train.tsv")
    want = tune.evaluation.evaluate(model, files / "valid.tsv", cutoffs=(20,), mode="conservative")["recall"][20]
    assert study.best_value == want
    assert want != tune.evaluation.evaluate(model, files / "valid.tsv", cutoffs=(20,))["recall"][20]  # relu's ties


def test_files_with_other_column_names_and_a_final_cut_off_no_trial_recorded(files, tmp_path, capsys):
    renamed = {"SessionId": "sid", "ItemId": "iid", "Time": "ts"}
    for name in ("train.tsv", "valid.tsv"):
        pd.read_csv(files / name, sep="\t").rename(columns=renamed).to_csv(tmp_path / name, sep="\t", index=False)
    argv = command(tmp_path, tmp_path, 1, "-sk", "sid", "-ik", "iid", "-tk", "ts", "--pruner", "none",
                   "--storage", f"sqlite:///{tmp_path / 'study.db'}")
    argv[4:6] = ["-sp", str(files / "space.txt")]
    assert tune.main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("Recall@20: ")  # -fm 20 by default
    with pytest.raises(SystemExit) as exit_:  # the study is done; its trial recorded no cut-off 7
        tune.main([*argv, "-fm", "7"])
    assert exit_.value.code == 1 and "-fm 7: the best trial recorded only the cut-offs [1, 5, 10, 20]" in \
        capsys.readouterr().err


def test_a_space_value_the_model_refuses_fails_its_trial_not_the_study(files, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    (tmp_path / "space.txt").write_text("dropout_p_hidden categorical 0.0 1.0\n")
    study = optuna.create_study(storage=storage, study_name="gru4rec", direction="maximize")
    for p in ("1.0", "0.0"):  # Optuna holds the space's categorical tokens
        study.enqueue_trial({"dropout_p_hidden": p})
    space = tune.read_space(tmp_path / "space.txt", tune.gru4rec.GRU4Rec().get_params())
    fixed = {"layers": (8,), "n_epochs": 1, "n_sample": 4, "batch_size": 16}
    study = tune.tune(files / "train.tsv", files / "valid.tsv", space, fixed, "mrr@10", n_trials=2,
                      storage=storage, pruner="none")
    refused, fine = study.get_trials()[:2]
    assert refused.state.name == "FAIL" and "dropout_p_hidden=1.0 is invalid" in refused.user_attrs["error"]
    assert fine.state.name == "COMPLETE" and study.best_trial.number == fine.number


def test_pruning_stops_a_deliberately_bad_trial_early(files, tmp_path, caplog):
    caplog.set_level("INFO")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="prune", direction="maximize")
    for lr in (0.1, 0.1, 0.0001):  # two good trials, then one that learns nothing in an epoch
        study.enqueue_trial({"learning_rate": lr, "momentum": 0.0})
    space = tune.read_space(files / "space.txt", tune.gru4rec.GRU4Rec().get_params())
    fixed = {"layers": (8,), "n_epochs": 3, "n_sample": 4, "batch_size": 16,
             "loss": "cross-entropy", "final_act": "softmax"}
    study = tune.tune(files / "train.tsv", files / "valid.tsv", space, fixed, "mrr@10", n_trials=3,
                      storage=storage, study_name="prune",
                      pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    good, other, bad = study.get_trials()
    assert good.state.name == other.state.name == "COMPLETE" and len(good.intermediate_values) == 3
    assert bad.state.name == "PRUNED" and list(bad.intermediate_values) == [1]  # stopped after epoch 1 of 3
    assert bad.user_attrs["epochs"] == 1 and bad.intermediate_values[1] < min(good.intermediate_values[1],
                                                                               other.intermediate_values[1])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trial 3/3")]
    assert len(lines) == 1 and "pruned after epoch 1 at mrr@10" in lines[0]


def test_the_median_pruner_waits_for_the_warmup_epochs(files, tmp_path, caplog):
    """The same deliberately bad trial as above, after the 5 trials the median pruner starts from:
    with warmup=2 it runs epochs 1 and 2 and is stopped after epoch 3 of 4."""
    caplog.set_level("INFO")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="warmup", direction="maximize")
    for lr in (0.1,) * 5 + (0.0001,):
        study.enqueue_trial({"learning_rate": lr, "momentum": 0.0})
    space = tune.read_space(files / "space.txt", tune.gru4rec.GRU4Rec().get_params())
    fixed = {"layers": (8,), "n_epochs": 4, "n_sample": 4, "batch_size": 16,
             "loss": "cross-entropy", "final_act": "softmax"}
    study = tune.tune(files / "train.tsv", files / "valid.tsv", space, fixed, "mrr@10", n_trials=6,
                      storage=storage, study_name="warmup", pruner="median", warmup=2)
    *good, bad = study.get_trials()
    assert all(t.state.name == "COMPLETE" and len(t.intermediate_values) == 4 for t in good)
    assert bad.state.name == "PRUNED" and list(bad.intermediate_values) == [1, 2, 3]
    assert all(bad.intermediate_values[3] < t.intermediate_values[3] for t in good)
    assert any("median pruner: no trial is stopped before the end of epoch 3" in r.getMessage()
               for r in caplog.records)


def test_patience_ends_trials_early_and_sets_n_epochs(files, tmp_path):
    space = tune.read_space(files / "space.txt", tune.gru4rec.GRU4Rec().get_params())
    fixed = {"layers": (8,), "n_epochs": 4, "n_sample": 4, "batch_size": 16,
             "loss": "cross-entropy", "final_act": "softmax"}
    study = tune.tune(files / "train.tsv", files / "valid.tsv", space, fixed, "mrr@10", n_trials=1, seed=0,
                      pruner="none", patience=1)
    trial = study.best_trial
    history = trial.user_attrs["history"]
    best_epoch = max(history, key=lambda h: h["mrr"]["10"] if "10" in h["mrr"] else h["mrr"][10])["epoch"]
    assert trial.user_attrs["best_epoch"] == best_epoch and trial.value == pytest.approx(
        max(h["mrr"].get(10, h["mrr"].get("10")) for h in history))
    assert len(history) == min(4, best_epoch + 1)  # one epoch without improvement ends it
    assert tune.best_params(study)["n_epochs"] == best_epoch


@pytest.mark.slow
def test_a_study_on_a_real_postgresql_server(files, tmp_path):
    import tempfile

    import pgserver

    # as root, pgserver runs the server as its own system user, which cannot enter pytest's private
    # tmp_path: the data folder goes into a fresh folder of its own, deleted by cleanup()
    server = pgserver.get_server(tempfile.mkdtemp(prefix="gru4rec-pg-"), cleanup_mode="delete")
    try:
        url = server.get_uri()
        argv = command(files, tmp_path, 2, "--storage", url, "--study-name", "pg", "--workers", "2",
                       "--pruner", "median")
        assert tune.main(argv) == 0
        argv[argv.index("-n") + 1] = "3"
        assert tune.main(argv) == 0  # the same command with a larger total runs one more trial
        check_exactly(load(url, "pg"), 3)
    finally:
        server.cleanup()


@pytest.mark.parametrize("flag, value, message", [("--workers", "0", "--workers must be a positive integer"),
                                                  ("--patience", "-1", "--patience must be"),
                                                  ("--eval-batch", "0", "--eval-batch must be a positive integer"),
                                                  ("--warmup", "-1", "--warmup must be an integer >= 0"),
                                                  ("--pruner", "sometimes", "invalid choice")])
def test_bad_tuner_flags_exit_2(files, tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_:
        tune.main(command(files, tmp_path, 1, flag, value))
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_storage_that_is_not_a_url_is_refused(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        tune.main(command(files, tmp_path, 1, "--storage", str(tmp_path / "plain.db")))
    assert exit_.value.code == 1 and "not a database URL" in capsys.readouterr().err


def _stat(path):
    """(state, parent pid) of a process from its /proc stat file, or None if it is gone."""
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _children(pid):
    """PIDs of the live processes whose parent is `pid` (Linux /proc)."""
    stats = {int(p.parent.name): _stat(p) for p in Path("/proc").glob("[0-9]*/stat")}
    return [child for child, st in stats.items() if st and st[1] == pid and st[0] != "Z"]


def _alive(pid):
    st = _stat(f"/proc/{pid}/stat")
    return st is not None and st[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_the_command_stops_its_workers(files, tmp_path, sig):
    """`kill` (SIGTERM) of gru4rec-tune ends its worker processes with it; after a SIGKILL, which the
    command cannot pass on, the workers notice that their parent is gone and end within seconds."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = command(files, tmp_path, 50, "--workers", "2", "--storage", storage, "--pruner", "none", epochs=3)
    main = subprocess.Popen([sys.executable, "-m", "gru4rec_lib.tune", *argv], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not workers:  # wait for the worker and a running trial
            time.sleep(0.5)
            try:
                running = [t for t in load(storage).get_trials() if t.state.name == "RUNNING"]
            except (KeyError, Exception):  # the study does not exist yet
                continue
            if len(running) >= 2:
                workers = _children(main.pid)
        assert workers, "the worker process did not start a trial"
        os.kill(main.pid, sig)
        main.wait(timeout=60)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers)
    finally:
        main.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
