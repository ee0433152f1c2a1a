"""Test helper: the numpy state a GRU4Rec fit starts from (spied from `_set_fitted`, before any step)."""
from contextlib import contextmanager

import numpy as np
import pytest

import gru4rec


@contextmanager
def captured_fitted_state():
    """Within the block, every fit copies the state it hands to `_set_fitted` into the yielded dict."""
    captured = {}
    original = gru4rec.GRU4Rec._set_fitted

    def spy(self, cfg, item_map, state, support):
        captured.update({name: np.array(value, copy=True) for name, value in state.items()})
        return original(self, cfg, item_map, state, support)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gru4rec.GRU4Rec, "_set_fitted", spy)
        yield captured
