"""fit(callbacks=...): called after every epoch, can stop training; the validation / early-stopping callback."""
import numpy as np
import pandas as pd
import pytest

import evaluation
import gru4rec
from gru4rec_lib import callbacks, synthetic

pytestmark = pytest.mark.slow  # whole fits per test: in the slow set

PARAMS = dict(layers=(8,), n_sample=4, batch_size=16, show_progress=False, seed=1)


@pytest.fixture(scope="module")
def data():
    events = synthetic.generate_sessions(n_sessions=250, n_items=30, seed=5)
    return synthetic.split_by_time(events, test_fraction=0.2)


def test_callback_sees_every_epoch_and_the_model(data):
    train, _ = data
    seen = []

    def record(model, stats):
        seen.append((stats["epoch"], stats["loss"], len(model.epoch_losses_)))
    model = gru4rec.GRU4Rec(n_epochs=3, **PARAMS).fit(train, callbacks=[record])
    assert [s[0] for s in seen] == [1, 2, 3] and [s[2] for s in seen] == [1, 2, 3]
    assert [s[1] for s in seen] == model.epoch_losses_


def test_a_callback_returning_true_stops_training(data):
    train, _ = data
    calls, later = [], []

    def stop_after_two(model, stats):
        calls.append(stats["epoch"])
        return stats["epoch"] == 2
    model = gru4rec.GRU4Rec(n_epochs=5, **PARAMS).fit(
        train, callbacks=[stop_after_two, lambda m, s: later.append(s["epoch"])])
    assert calls == [1, 2] and len(model.epoch_losses_) == 2 and model.stopped_epoch_ == 2
    assert later == [1, 2]  # every callback still sees the epoch that stops training
    assert gru4rec.GRU4Rec(n_epochs=2, **PARAMS).fit(train).stopped_epoch_ is None


def test_stopped_training_equals_a_shorter_fit(data):
    """Stopping after epoch 2 of 4 leaves the same weights as fitting 2 epochs (same seed)."""
    train, valid = data
    stopped = gru4rec.GRU4Rec(n_epochs=4, **PARAMS).fit(train, callbacks=[lambda m, s: s["epoch"] >= 2])
    short = gru4rec.GRU4Rec(n_epochs=2, **PARAMS).fit(train)
    assert stopped.epoch_losses_ == short.epoch_losses_
    a, b = (evaluation.evaluate(m, valid, cutoffs=(5,)) for m in (stopped, short))
    assert a["recall"] == b["recall"] and a["mrr"] == b["mrr"]


def test_bad_callbacks_are_rejected(data):
    train, _ = data
    with pytest.raises(TypeError, match="callbacks"):
        gru4rec.GRU4Rec(n_epochs=1, **PARAMS).fit(train, callbacks=["not callable"])
    with pytest.raises(TypeError, match="callbacks"):
        gru4rec.GRU4Rec(n_epochs=1, **PARAMS).fit(train, callbacks=lambda m, s: None)  # a list is needed


def test_validation_callback_matches_evaluate_after_each_epoch(data):
    """The history's numbers are those of evaluation.evaluate on the model after that epoch."""
    train, valid = data
    check = callbacks.Validation(valid, cutoffs=(5, 10), metric="mrr@10")
    gru4rec.GRU4Rec(n_epochs=2, **PARAMS).fit(train, callbacks=[check])
    assert [h["epoch"] for h in check.history] == [1, 2]
    one = evaluation.evaluate(gru4rec.GRU4Rec(n_epochs=1, **PARAMS).fit(train), valid, cutoffs=(5, 10))
    assert check.history[0]["recall"] == one["recall"] and check.history[0]["mrr"] == one["mrr"]
    assert check.history[0]["loss"] > 0 and check.best_epoch in (1, 2)
    assert check.best_value == max(h["mrr"][10] for h in check.history)


def test_validation_of_a_user_model_continues_the_users_histories(tmp_path):
    """Validation(history=train) gives evaluate(..., history=train) after each epoch, and files
    without a session column are read as the model reads them (a user model needs none)."""
    events = synthetic.generate_sessions(n_sessions=250, n_items=30, seed=5).rename(columns={"SessionId": "UserId"})
    last = events.groupby("UserId").Time.transform("max")
    train, valid = events[events.Time < last], events[events.Time == last].copy()
    valid = pd.concat([train.groupby("UserId").tail(1).assign(Time=lambda f: f.Time + 0.5), valid])
    train.to_csv(tmp_path / "train.tsv", sep="\t", index=False)
    valid.to_csv(tmp_path / "valid.tsv", sep="\t", index=False)
    params = dict(PARAMS, user_key="UserId")
    check = callbacks.Validation(tmp_path / "valid.tsv", cutoffs=(5,), metric="recall@5", history=tmp_path / "train.tsv")
    gru4rec.GRU4Rec(n_epochs=1, **params).fit(train, callbacks=[check])
    want = evaluation.evaluate(gru4rec.GRU4Rec(n_epochs=1, **params).fit(train), valid, cutoffs=(5,), history=train)
    assert check.history[0]["recall"] == want["recall"] and check.history[0]["mrr"] == want["mrr"]


def test_early_stopping_waits_patience_epochs(data):
    train, valid = data
    values = iter([0.5, 0.6, 0.55, 0.58, 0.59, 0.7, 0.8])
    check = callbacks.Validation(valid, metric="recall@20", patience=2)
    check.score = lambda model: {"recall": {20: next(values)}, "mrr": {20: 0.0}}  # scripted metric values
    model = gru4rec.GRU4Rec(n_epochs=7, **PARAMS).fit(train, callbacks=[check])
    # best 0.6 at epoch 2; epochs 3 and 4 do not improve on it: stop after epoch 4
    assert len(model.epoch_losses_) == 4 and check.best_epoch == 2 and check.stopped_epoch == 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(metric="precision@5"), "expected recall@N or mrr@N"),
    (dict(patience=0), "patience"),
    (dict(patience=1.5), "patience"),
    (dict(cutoffs=(5,), metric="recall@20"), "cut-off 20"),
    (dict(min_delta=-0.1), "min_delta"),
])
def test_validation_callback_rejects_bad_arguments(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        callbacks.Validation(data[1], **kwargs)


def test_validation_does_not_change_the_callers_data(data):
    train, valid = data
    before = valid.copy()
    gru4rec.GRU4Rec(n_epochs=1, **PARAMS).fit(train, callbacks=[callbacks.Validation(valid)])
    assert valid.equals(before)
    assert np.isfinite(before["Time"]).all()


# --- the command line: --valid, --patience, --plot-curves ---

def _write(data, folder):
    train, valid = data
    train.to_csv(folder / "train.tsv", sep="\t", index=False)
    valid.to_csv(folder / "valid.tsv", sep="\t", index=False)
    return str(folder / "train.tsv"), str(folder / "valid.tsv")


def test_command_line_validates_each_epoch_and_plots_the_curves(data, tmp_path, caplog):
    from gru4rec_lib import cli

    caplog.set_level("INFO")
    train, valid = _write(data, tmp_path)
    png = tmp_path / "curves.png"
    code = cli.main([train, "-ps", "layers=8,n_epochs=3,n_sample=4,batch_size=16", "-q", "-m", "5", "10",
                     "--valid", valid, "--plot-curves", str(png)])
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"
    lines = [r.getMessage() for r in caplog.records if "valid Recall@5" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 2", "epoch 3"]
    assert all("Recall@10" in line and "MRR@10" in line and "best recall@10" in line for line in lines)


def test_command_line_patience_stops_training(data, tmp_path, capsys):
    from gru4rec_lib import cli

    train, valid = _write(data, tmp_path)
    # a learning rate of 1e-12 changes no float32 weight: it never improves the validation numbers: epoch 1 stays best
    cli.main([train, "-ps", "layers=8,n_epochs=6,n_sample=4,batch_size=16,learning_rate=1e-12", "-q",
              "--valid", valid, "--patience", "2"])
    assert "3 epochs in" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--patience", "2"], "--patience needs --valid"),
    (["--valid", "missing.tsv"], "--valid file not found"),
    (["--model", "pop", "--valid", "VALID"], "--valid needs training GRU4Rec"),
    (["--plot-curves", "no/such/folder/x.png"], "does not exist"),
])
def test_command_line_validation_flags_are_checked(data, tmp_path, capsys, extra, message):
    from gru4rec_lib import cli

    train, valid = _write(data, tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.main([train, "-q", *[valid if e == "VALID" else e for e in extra]])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
