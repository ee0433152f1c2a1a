"""Progress where a user waits: bars count mini-batches on a terminal, a log line per epoch elsewhere."""
import io
import logging
import re
import sys

import numpy as np
import pytest

import evaluation
import gru4rec
from gru4rec_lib import sessiondata, synthetic

PARAMS = dict(layers=(8,), n_epochs=2, n_sample=4, batch_size=8, steps_per_call=4, seed=0)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _events():
    return synthetic.generate_sessions(n_sessions=60, n_items=20, seed=3)


def _n_minibatches(events, batch_size):
    data = sessiondata.SessionData.from_events(sessiondata.load_events(events),
                                               sessiondata.ItemMap.from_events(events.ItemId))
    return len(sessiondata.schedule_definition(data, data.session_order(), batch_size).active)


@pytest.mark.slow
def test_bar_counts_mini_batches_on_a_terminal(monkeypatch):
    events, terminal = _events(), _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    gru4rec.GRU4Rec(**PARAMS, show_progress=True).fit(events)
    shown = terminal.getvalue()
    total = _n_minibatches(events, PARAMS["batch_size"])
    assert total % PARAMS["steps_per_call"]  # the padding steps of the last call are not counted
    assert re.search(rf"epoch 2/2: .*\b[0-9]+/{total} ", shown), shown[-300:]
    assert "mini-batch" in shown and "call" not in shown


@pytest.mark.slow
def test_no_bar_but_a_log_line_per_epoch_when_stderr_is_not_a_terminal(monkeypatch, caplog):
    log_file = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log_file)
    with caplog.at_level(logging.INFO, logger="gru4rec"):
        model = gru4rec.GRU4Rec(**PARAMS, show_progress=True).fit(_events())
        evaluation.evaluate(model, _events(), show_progress=True)
    assert log_file.getvalue() == ""
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [m.split(":")[0] for m in epochs] == ["epoch 1", "epoch 2"]
    assert np.isfinite(model.epoch_losses_).all()
