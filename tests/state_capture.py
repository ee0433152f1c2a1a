"""Test helpers: the state a GRU4Rec fit starts from, through the public API only.

The initial weights depend on the seed alone (not on n_epochs), so a fit with ``n_epochs=0``
gives exactly the state that a fit with the same parameters and data starts its steps from.
"""
import gru4rec


def initial_state(data, **params):
    """The state dict a fit of ``GRU4Rec(**params)`` on `data` starts from (before any step)."""
    return gru4rec.GRU4Rec(**{**params, "n_epochs": 0}).fit(data).state_dict()


def retrain_start_state(model, data):
    """The state dict ``model.fit(data, retrain=True)`` starts from (grown, before any step).

    Works on an independent copy (same parameters, state and item ids); `model` is unchanged.
    """
    copy = gru4rec.GRU4Rec(**{**model.get_params(), "n_epochs": 0})
    copy.load_state_dict(model.state_dict(), item_ids=model.item_ids_)
    return copy.fit(data, retrain=True).state_dict()
