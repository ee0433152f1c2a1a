"""The sequence-aware extension of GRU4Rec: truncated BPTT and user histories.

The published model (``bptt=1``, one session per slot, every session from the zero state) is in
``gru4rec.py``; this module holds what the extension adds to it, so that the published algorithm
reads on its own:

- BPTT(T, 1) training (``bptt=T > 1``): each step keeps its slot's last T inputs, resets and
  dropout masks (the *window*) and recomputes the slot's last T GRU steps from the state T-1
  steps back, so that the loss reaches T steps into the past (`SequenceMixin._bptt_window`,
  `SequenceMixin._bptt_forward`).
- History continuation (``user_key``): a user's test sequence continues from the hidden state
  the model reached on the user's history (`continue_histories`, used by
  ``evaluation.evaluate(..., history=...)``).

`SequenceMixin` is a base class of ``gru4rec.GRU4Rec``: its methods use the model's weights,
configuration and compiled-function cache.
"""
import logging

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt

from . import backend, sessiondata

logger = logging.getLogger(__name__)

__all__ = ["SequenceMixin", "StartStates", "continue_histories", "start_inputs", "start_from"]


class SequenceMixin:
    """BPTT windows and history feeding, mixed into GRU4Rec."""

    # -- BPTT(T, 1) training ----------------------------------------------------------------
    @staticmethod
    def _keep_shapes(cfg):
        """Dropout masks a BPTT window keeps per step: name -> (B, width)."""
        shapes = {}
        if cfg.dropout_p_embed and cfg.mode != "none":
            shapes["embed"] = (cfg.batch_size, cfg.emb_size)
        if cfg.dropout_p_hidden:
            shapes.update({layer: (cfg.batch_size, h) for layer, h in enumerate(cfg.layers)})
        return shapes

    def _window_start(self, cfg):
        """The carried window before the first step: T-1 inactive, all-reset steps (numpy)."""
        B, T = cfg.batch_size, cfg.bptt
        window = {"x": np.zeros((T - 1, B), np.int32), "reset": np.ones((T - 1, B), bool),
                  "active": np.zeros((T - 1, B), bool)}
        window.update({f"keep_{key}": np.ones((T - 1,) + shape, bool) for key, shape in self._keep_shapes(cfg).items()})
        return {f"window/{key}": value for key, value in window.items()}

    def _bptt_window(self, cfg, state, x_idx, reset, active):
        """The slot's last T steps (T = bptt): the carried T-1 and this one, oldest first, (T, B) each.

        "touched": a step's input row gets a gradient, i.e. the step was real and no reset
        follows it inside the window (a reset cuts the gradient path to the steps before it).
        """
        window = {key: pt.concatenate([state[f"window/{key}"], value[None]])
                  for key, value in (("x", x_idx), ("reset", reset), ("active", active))}
        later = [pt.zeros_like(reset)]  # later[j]: a reset at one of the steps after j
        for j in range(cfg.bptt - 1, 0, -1):
            later.append(later[-1] | window["reset"][j])
        window["touched"] = window["active"] & ~pt.stack(later[::-1])
        return window

    def _bptt_forward(self, cfg, state, window, x_rows, hidden):
        """GRU steps over the window from the state T-1 steps back, with the current weights.

        Returns (rng, hidden after the last step, new carried state): the carry is the state
        after the window's oldest step and the window without it. Dropout masks are drawn for
        the newest step only and kept for the steps after, so every recomputation of a step
        drops the same units.
        """
        T, B = cfg.bptt, cfg.batch_size
        x_rows = x_rows.reshape((T, B, x_rows.type.shape[-1]))
        rng, keeps = state.get("rng"), {}
        for key, shape in self._keep_shapes(cfg).items():
            rng, u = pt.random.uniform(size=shape, rng=rng, return_next_rng=True)
            p = cfg.dropout_p_embed if key == "embed" else cfg.dropout_p_hidden
            keeps[key] = pt.concatenate([state[f"window/keep_{key}"], (u >= p)[None]])
        carried = {}
        for j in range(T):
            hidden = [pt.switch(window["reset"][j][:, None], 0, h) for h in hidden]
            hidden = self._forward(cfg, state, x_rows[j], hidden, training=True,
                                   keeps={key: keep[j] for key, keep in keeps.items()})[1]
            if j == 0:
                carried.update({f"hidden_{i}": h for i, h in enumerate(hidden)})
        carried.update({f"window/{key}": window[key][1:] for key in ("x", "reset", "active")})
        carried.update({f"window/keep_{key}": keep[1:] for key, keep in keeps.items()})
        return rng, hidden, carried

    def _states_before_last(self, data, batch_size, steps):
        """Hidden states (per layer, (n_seq, h)) after feeding each sequence all but its last event.

        One compiled K-step feed (no scoring) over the session-parallel schedule; a sequence of one
        event keeps the zero state.
        """
        key = ("feed_states", batch_size, steps)
        if key not in self._fns:
            self._fns[key] = self._compile_feed_steps(batch_size, steps)
        fn = self._fns[key]
        states = [np.zeros((data.n_sessions, h), backend.FLOATX) for h in self._cfg.layers]
        hidden = self._zero_hidden(batch_size)
        length = np.diff(data.offsets)
        for chunk in sessiondata.session_parallel_schedule(data, np.arange(data.n_sessions), batch_size, steps):
            out = fn(chunk.inputs, chunk.reset, *hidden)
            hidden = [o[-1] for o in out]
            session = np.maximum(chunk.session, 0)
            k, b = np.nonzero(chunk.active & (chunk.position == length[session] - 2))
            if len(k):
                for layer, o in enumerate(out):
                    states[layer][chunk.session[k, b]] = np.asarray(o)[k, b]
        return states

    @backend.float32_graph
    def _compile_feed_steps(self, batch_size, steps):
        """Compile K feeding steps (no scoring): (inputs, reset, *hidden) -> (K, B, h) states per layer."""
        seqs = backend.schedule_inputs(steps, batch_size)
        inputs, reset = seqs[0], seqs[2]
        hidden = [pt.tensor(f"hidden_{i}", shape=(batch_size, h), dtype=backend.FLOATX)
                  for i, h in enumerate(self._cfg.layers)]
        outputs = pytensor.scan(lambda item_idx, r, *states: self._step_graph(item_idx, r, list(states)),
                                sequences=[inputs, reset], outputs_info=hidden, n_steps=steps, return_updates=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return backend.compile_fn([inputs, reset, *hidden], list(outputs), donate=False)


# ---------------------------------------------------------------- continued test sequences
def start_inputs(steps, batch_size, layers):
    """Scan inputs of a continued evaluation: `start` (K, B) and the start states (K, B, h) per layer."""
    return [pt.tensor("start", shape=(steps, batch_size), dtype="bool")] + [
        pt.tensor(f"start_state_{i}", shape=(steps, batch_size, h), dtype=backend.FLOATX)
        for i, h in enumerate(layers)]


def start_from(reset, args, n_layers):
    """Inside a scan step: slots whose step has `start` take the given state instead of zero.

    `args` holds the step's start flags, the start states, then the carried states and the rest;
    returns the reset flags and the args with the start inputs consumed.
    """
    start, init, args = args[0], args[1:1 + n_layers], args[1 + n_layers:]
    states = [pt.switch(start[:, None], s0, s) for s0, s in zip(init, args[:n_layers])]
    return reset & ~start, (*states, *args[n_layers:])


class StartStates:
    """Per test sequence: does it continue a history (`continued`, 0/1), and the states it starts from."""

    def __init__(self, continued, states):
        self.continued, self.states = continued, states  # (n_seq,) int; per layer (n_seq, h)

    def step_inputs(self, chunk):
        """`start` (K, B) and the start states (K, B, h) per layer for one chunk."""
        session = np.maximum(chunk.session, 0)
        start = chunk.active & (chunk.position == 0) & (self.continued[session] == 1)
        return [start] + [np.where(start[..., None], s[session], 0).astype(backend.FLOATX) for s in self.states]


def continue_histories(model, group, test, test_events, history_events, batch_size, steps):
    """Prepend each test user's last history event to their test sequence; the states before it.

    Parameters
    ----------
    model : gru4rec.GRU4Rec
        Fitted with ``user_key``.
    group : callable
        ``group(events, keep_rows=False) -> SessionData`` of the test's reader and item map.
    test : SessionData
        The grouped test sequences.
    test_events, history_events : DataFrame
        Loaded test and history events.
    batch_size, steps : int
        Slots and steps per compiled call of the history feed.

    Returns
    -------
    (SessionData, StartStates): the joined test sequences and where each starts from. The break
    flags (reset_between_sessions) are recomputed on the joined events, so a session running
    from the history into the test keeps its state.
    """
    seq_key, time_key = model.user_key, model.time_key
    past_events = history_events[history_events[seq_key].isin(test.session_ids)]
    past = group(past_events, keep_rows=True)
    before = model._states_before_last(past, batch_size, steps)
    if past.breaks is not None:  # a last history event that starts a session is fed from the zero state
        for state in before:
            state[past.breaks[past.offsets[1:] - 1]] = 0
    tail = past_events.iloc[past.rows[past.offsets[1:] - 1]].copy()  # each user's last known event
    # the tail takes the time of the user's first test event and comes first: sorting is stable
    tail[time_key] = test_events.groupby(seq_key, sort=False)[time_key].min().reindex(tail[seq_key]).to_numpy()
    joined = group(pd.concat([tail, test_events], ignore_index=True))
    row = pd.Index(past.session_ids).get_indexer(joined.session_ids)  # -1: no history
    continued = (row >= 0).astype(np.int64)
    states = [np.zeros((len(row), s.shape[1]), backend.FLOATX) for s in before]
    for start, end in zip(states, before):
        start[row >= 0] = end[row[row >= 0]]
    logger.info("evaluation continues %d of %d test users from their history", int(continued.sum()), len(row))
    return joined, StartStates(continued, states)
