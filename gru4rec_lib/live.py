"""Live sessions: top-k recommendations for many visits at once, each keeping its state.

`LiveSessionsMixin` is a base class of ``gru4rec.GRU4Rec``. `recommend` feeds each listed session
its new events through the model's GRU (one compiled step, any batch size), keeps every session's
hidden state and the items it has had between calls (least recently used sessions forgotten past
``max_live_sessions``), and takes the top k of the scores of all items on the device.
It uses the model's weights, configuration and compiled-function cache (`_feed_fn`, `_weights`,
`_rank_activation`, `_fns`).
"""
import warnings
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytensor.tensor as pt

from . import sessiondata
from .backend import FLOATX, TopK, compile_fn, float32_graph

__all__ = ["LiveSessionsMixin"]


class LiveSessionsMixin:
    """`recommend`, `live_sessions` and `end_sessions`, mixed into GRU4Rec."""

    def recommend(self, session_ids, item_ids, k=10, exclude_seen=False):
        """Top-k next items for many live sessions, keeping each session's state between calls.

        Each call feeds every listed session its new events, then scores all items from the
        session's latest hidden state and takes the top k on the device. A session id seen for the
        first time starts from the zero state; `end_sessions` forgets sessions, and beyond
        ``max_live_sessions`` live sessions the least recently used ones are forgotten. Items
        unknown to the model are ignored for the state (the session keeps its state; a session
        with no known item yet is scored from the zero state, i.e. the model's context-free
        ranking) and never raise; an id of the wrong type for the model's ids (``'4'`` for a
        model with int ids) is also unknown, and a call with one warns once naming it. A `fit`
        (retrain included), `load_state_dict` or `load` starts with no live session: no state
        computed with other weights is continued.

        Parameters
        ----------
        session_ids : array-like (n,)
            Distinct session ids (n may be 0: empty results).
        item_ids : array-like (n,)
            Each session's newest item id, or a sequence of its new item ids (oldest first; an
            empty sequence asks for recommendations without feeding anything).
        k : int, default 10
        exclude_seen : bool, default False
            Rank the items the session has already had (all its known items so far) last, with
            score -inf: they appear only when fewer than k other items exist.

        Returns
        -------
        (ids, scores): arrays (n, k) of item ids and their final_act scores, best first.

        Raises
        ------
        ValueError
            Also when a score is not finite (damaged or overflowing weights): no ranking is
            returned from NaN or inf scores.

        Examples
        --------
        >>> from gru4rec import GRU4Rec
        >>> from gru4rec_lib import synthetic
        >>> events = synthetic.generate_sessions(n_sessions=300, n_items=40, seed=0)
        >>> model = GRU4Rec(layers=(16,), n_epochs=1, n_sample=8, show_progress=False).fit(events)
        >>> ids, scores = model.recommend(["visitor-1", "visitor-2"], [3, [5, 7]], k=5)
        >>> ids.shape
        (2, 5)
        """
        self._check_fitted()
        session_ids = _sequence(session_ids, "session_ids", "session ids")
        histories = [list(h) if isinstance(h, (list, tuple, np.ndarray, pd.Series)) else [h]
                     for h in _sequence(item_ids, "item_ids", "one entry (an item id or a list of them) per session")]
        if not isinstance(exclude_seen, (bool, np.bool_)):
            raise TypeError(f"exclude_seen must be True or False, got {exclude_seen!r}")
        if len(histories) != len(session_ids) or len(set(session_ids)) != len(session_ids):
            raise ValueError("recommend needs one entry of item_ids per session and distinct session_ids")
        if not sessiondata.is_int(k) or not 1 <= k <= self.n_items_:
            raise ValueError(f"k={k!r} is invalid: expected an int in [1, n_items_={self.n_items_}]")
        if not session_ids:
            return self.item_ids_[np.zeros((0, k), np.int64)], np.zeros((0, k), FLOATX)
        live = self._live if self._live is not None else OrderedDict()
        states = [live.get(s) or ([np.zeros(h, FLOATX) for h in self._cfg.layers], set()) for s in session_ids]
        self._feed_histories(states, self._known_indices(histories))
        for session, state in zip(session_ids, states):  # most recently used last
            live.pop(session, None)
            live[session] = state
        while len(live) > self._cfg.max_live_sessions:
            live.popitem(last=False)
        self._live = live
        hidden_last = np.stack([state[0][-1] for state in states])
        return self._top_k(hidden_last, [state[1] for state in states] if exclude_seen else None, k)

    def live_sessions(self):
        """Ids of the sessions `recommend` keeps a state for, least recently used first."""
        return list(self._live or ())

    def _known_indices(self, histories):
        """Item indices of each history's known items; one warning for ids of the wrong type."""
        flat = [item for history in histories for item in history]
        idx = self.item_map_.indices(pd.Index(flat, dtype=object)) if flat else np.zeros(0, np.int32)
        expected, wrong = sessiondata.wrong_kind_ids([flat[i] for i in np.flatnonzero(idx < 0)], self.item_ids_)
        if wrong:
            warnings.warn(f"item id {wrong[0]!r} ({sessiondata.id_kind(wrong[0])}) has the wrong type for this "
                          f"model, whose item ids are {expected}; {len(wrong)} such ids are treated as unknown",
                          stacklevel=3)
        ends = np.cumsum([len(history) for history in histories])
        return [part[part >= 0] for part in np.split(idx, ends[:-1])]

    def _feed_histories(self, states, known):
        """Feed each session its known new items, step by step over the longest history."""
        lengths = np.array([len(idx) for idx in known])
        for step in range(lengths.max(initial=0)):
            rows = np.flatnonzero(lengths > step)
            item_idx = np.array([known[r][step] for r in rows], dtype=np.int32)
            hidden = [np.stack([states[r][0][layer] for r in rows]) for layer in range(len(self._cfg.layers))]
            new_hidden = _unpadded(self._feed_fn()(*_padded([item_idx, np.zeros(len(rows), bool), *hidden])),
                                   len(rows))
            for j, r in enumerate(rows):
                states[r][0][:] = [h[j] for h in new_hidden]
                states[r][1].add(int(item_idx[j]))

    def _top_k(self, hidden_last, seen, k):
        """(ids, scores) of the k best items per row, computed on the device in chunks of rows."""
        chunk = min(128, _bucket(len(hidden_last)))  # measured fastest on a 2-core CPU (bench/recommend.py)
        width = max((len(s) for s in seen), default=0) if seen is not None else 0
        results = []
        for start in range(0, len(hidden_last), chunk):
            rows = hidden_last[start:start + chunk]
            inputs = [rows]
            if seen is not None:  # padded with the dummy column n_items
                block = np.full((len(rows), max(width, 1)), self.n_items_, np.int32)
                for r, items in enumerate(seen[start:start + chunk]):
                    block[r, :len(items)] = sorted(items)
                inputs.append(block)
            n = len(rows)
            inputs = [np.concatenate([x, np.repeat(x[:1], chunk - n, axis=0)]) for x in inputs]
            results.append((n, self._top_k_fn(chunk, k, seen is not None)(*inputs)))
        if not all(bool(out[2]) for _, out in results):  # one read of the flags, after every chunk is queued
            raise ValueError("the model's scores are not finite (NaN or inf): its weights are damaged or "
                             "overflow float32; refit or load a good model")
        top = np.concatenate([np.asarray(out[0])[:n] for n, out in results])
        scores = np.concatenate([np.asarray(out[1])[:n] for n, out in results])
        return self.item_ids_[top], scores

    @float32_graph
    def _top_k_fn(self, rows, k, exclude):
        """Compiled (hidden_last (rows, h)[, seen (rows, S)]) -> (top indices, their scores, all finite)."""
        key = ("top_k", self._cfg, rows, k, exclude)
        if key not in self._fns:
            hidden_last = pt.tensor("hidden_last", shape=(rows, self._cfg.layers[-1]), dtype=FLOATX)
            weights = self._weights()
            logits = hidden_last @ weights["Wy"].T + weights["By"]  # (rows, n_items)
            scores = self._rank_activation()(logits)
            inputs = [hidden_last]
            if exclude:
                seen = pt.imatrix("seen")
                padded = pt.concatenate([scores, pt.zeros((rows, 1), dtype=FLOATX)], axis=1)
                scores = pt.set_subtensor(padded[pt.arange(rows)[:, None], seen], -np.inf)[:, :-1]
                inputs.append(seen)
            values, top = TopK(k)(scores)
            if self._cfg.final_act in ("softmax", "softmax_logit"):  # ranked on logits, reported as probabilities
                values = pt.exp(values - pt.logsumexp(logits, axis=1, keepdims=True))
            self._fns[key] = compile_fn(inputs, [top, values, pt.all(pt.isfinite(logits))], donate=False)
        return self._fns[key]

    def end_sessions(self, session_ids=None):
        """Forget live sessions (all of them when None); unknown ids are ignored."""
        if session_ids is None or self._live is None:
            self._live = None
            return
        for s in session_ids:
            self._live.pop(s, None)


def _bucket(n):
    """The smallest power of two >= n (at least 8): batch sizes that share compiled programs."""
    return max(8, 1 << (int(n) - 1).bit_length())


def _padded(arrays):
    """Pad the leading axis of each array to `_bucket` rows by repeating the first row."""
    n = len(arrays[0])
    size = _bucket(n)
    return [np.concatenate([a, np.repeat(a[:1], size - n, axis=0)]) if size > n else a for a in arrays]


def _unpadded(outputs, n):
    return [np.asarray(out)[:n] for out in outputs]


def _sequence(values, name, what):
    """`values` as a list; TypeError for a string (which would be iterated into characters) or a scalar."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") or isinstance(values, dict):
        raise TypeError(f"{name} must be a list, array or Series of {what}, got {type(values).__name__} {values!r}")
    return list(values)
