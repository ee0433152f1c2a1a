"""Session-based baselines that GRU4Rec results are read against.

Models
------
Pop
    The most popular training items (number of training events), the same list for every
    session. Baseline "POP" of Hidasi et al., "Session-based Recommendations with Recurrent
    Neural Networks", ICLR 2016 (arXiv 1511.06939).
SessionPop
    The items of the current session by their count so far, ties and all other items by global
    popularity. Baseline "S-POP" of Hidasi et al. 2016.
ItemKNN
    Item-to-item similarity from co-occurrence in training sessions,
    sim(i, j) = n_ij / ((n_i + lmbd)^alpha * (n_j + lmbd)^(1 - alpha)); the next item is scored
    by the similarity row of the session's last item. Baseline "Item-KNN" of Hidasi et al. 2016.
SKNN
    Session-based k-nearest neighbours: the current session's item set is compared with recent
    training sessions that share an item; an item's score is the summed similarity of the k
    nearest ones that contain it. Jannach & Ludewig, "When Recurrent Neural Networks meet the
    Neighborhood for Session-Based Recommendation", RecSys 2017.
VSKNN
    SKNN whose current-session vector weights recent items more (V-SKNN of Ludewig & Jannach,
    "Evaluation of Session-based Recommendation Algorithms", UMUAI 28, 2018).
MarkovChain
    First-order Markov chain: how often the last item was followed by each item in training.

Common interface
----------------
Every model follows the scikit-learn conventions of the library: ``__init__`` stores its keyword
arguments unchanged; ``fit(data)`` checks them, then reads the events (a DataFrame or a file, see
``sessiondata.load_events``) and returns ``self``; fitted attributes end in ``_`` (``item_ids_``,
``n_items_``). Scoring is stateful, like the session-parallel evaluation of GRU4Rec:
``score_step(reset, input_idx, active)`` advances B parallel session slots by one event each and
returns float32 scores (B, n_items_) for every slot's next item; ``reset_state(slots=None)``
forgets the given slots (all when None). This is the model interface of
`gru4rec_lib.interface.SessionModel`, which GRU4Rec implements too. Nothing is random, so equal data give equal scores.

Ties
----
Scores are float32 and the evaluator's rank mode decides between exactly equal scores. To keep
the lists of the sparse models from ending in one huge tie at zero, ``pop_tiebreak=True`` (the
default of ItemKNN, SKNN, VSKNN and MarkovChain) ranks the items the model has no evidence for
below every scored item, by global popularity, and leaves the scored items' values unchanged
(equal similarities stay tied); MarkovChain and SessionPop, whose scores are integer counts,
order equal counts by popularity as well (see ``_lexicographic``). Inactive slots score 0.
"""
import inspect
import logging
import time

import numpy as np
import scipy.sparse as sp

from . import sessiondata
from .interface import SessionModel

logger = logging.getLogger(__name__)

__all__ = ["Pop", "SessionPop", "ItemKNN", "SKNN", "VSKNN", "MarkovChain", "NotFittedError"]


NotFittedError = sessiondata.NotFittedError  # one class for every model of the package


# ---- parameter checks -----------------------------------------------------------------------

def _check_int(name, value, low):
    """Raise ValueError unless ``value`` is an integer >= ``low``."""
    if not (sessiondata.is_int(value) and value >= low):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_real(name, value, low, high=np.inf):
    """Raise ValueError unless ``value`` is a real number in [low, high]."""
    if not (sessiondata.is_real(value) and low <= value <= high):
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")


def _check_choice(name, value, choices):
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_bool(name, value):
    """Raise ValueError unless ``value`` is a bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")


# ---- sparse helpers ---------------------------------------------------------------------------

def _session_item_matrix(sessions, n_items):
    """Binary (n_sessions, n_items) CSR matrix: 1 where the session contains the item."""
    lengths = np.diff(sessions.offsets)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    ones = np.ones(len(rows), np.float64)
    matrix = sp.csr_array((ones, (rows, sessions.item_idx)), shape=(len(lengths), n_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0  # a session counts once however often it repeats the item
    return matrix


def _keep_last_per_row(matrix, m):
    """Keep the ``m`` entries with the largest column indices in each row of a CSR array."""
    matrix.sort_indices()
    lengths = np.diff(matrix.indptr)
    row_end = np.repeat(matrix.indptr[1:], lengths)
    keep = row_end - np.arange(matrix.nnz) <= m  # 1 for a row's last entry, 2 for the one before
    indptr = np.concatenate(([0], np.cumsum(np.minimum(lengths, m))))
    return sp.csr_array((matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape)


def _popularity_levels(support):
    """Dense popularity rank of each item (0 = least popular) and the number of distinct ranks."""
    levels = np.unique(support, return_inverse=True)[1].reshape(-1)
    return levels.astype(np.int64), int(levels.max()) + 1


def _lexicographic(counts, levels, n_levels):
    """Scores that order by ``counts`` first, then by popularity level.

    score = count * n_levels + level, computed exactly in float64 and rounded once to float32:
    exact while it is below 2**24; beyond, rounding can merge neighbouring scores into a tie
    but never reverses their order.
    """
    return (np.asarray(counts, np.float64) * n_levels + levels).astype(np.float32)


def _scores_from(base, row, item, values, n_rows):
    """Dense (n_rows, n_items) float32 scores: ``base`` (n_items,), ``values`` at (row, item)."""
    scores = np.tile(base, (n_rows, 1))
    scores[row, item] = values
    return scores


def _scores_from_sparse(base, evidence):
    """Dense float32 scores: ``base`` everywhere except at the entries of CSR ``evidence``."""
    row = np.repeat(np.arange(evidence.shape[0]), np.diff(evidence.indptr))
    return _scores_from(base, row, evidence.indices, evidence.data, evidence.shape[0])


# ---- slot state -------------------------------------------------------------------------------

class _SlotState:
    """Session histories of B parallel slots: the item of every event so far, per slot.

    ``items`` (B, capacity) grows by doubling when a session outgrows it, so the state costs
    O(B * longest session) memory, not O(B * n_items).
    """

    def __init__(self, batch_size, n_items):
        self.batch_size = batch_size
        self.n_items = n_items
        self.length = np.zeros(batch_size, np.int64)  # (B,) events so far
        self.items = np.zeros((batch_size, 8), np.int32)  # (B, capacity)

    def update(self, reset_rows, rows, items):
        """Clear ``reset_rows``, then append ``items`` to the sessions of ``rows``."""
        self.length[reset_rows] = 0
        capacity = self.items.shape[1]
        if len(rows) and self.length[rows].max() >= capacity:
            grown = np.zeros((self.batch_size, 2 * capacity), np.int32)
            grown[:, :capacity] = self.items
            self.items = grown
        self.items[rows, self.length[rows]] = items
        self.length[rows] += 1

    def last_items(self, rows):
        """The last item of each of the given (non-empty) slots."""
        return self.items[rows, self.length[rows] - 1]

    def distinct_items(self, rows):
        """The distinct items of the given slots' sessions, sorted by row then item.

        Returns
        -------
        row, item, last_position, count : numpy.ndarray
            ``row`` indexes ``rows``; ``last_position`` is the 1-based position of the item's last
            occurrence in the session; ``count`` its number of occurrences.
        """
        row, col = np.nonzero(np.arange(self.items.shape[1]) < self.length[rows][:, None])
        key = row * self.n_items + self.items[rows[row], col]
        # Reversed, so that return_index points at each item's last occurrence.
        key, last, count = np.unique(key[::-1], return_index=True, return_counts=True)
        return key // self.n_items, key % self.n_items, (col[::-1] + 1)[last], count


# ---- common base ------------------------------------------------------------------------------

class _Baseline(SessionModel):
    """Fitting, parameter access and the stateful ``score_step`` shared by all baselines.

    The model interface (``fit``, ``reset_state``, ``score_step``, ``score_steps``, ``item_ids_``)
    is `gru4rec_lib.interface.SessionModel`; ``score_steps`` runs ``score_step`` on the host.
    """

    def __init__(self, session_key="SessionId", item_key="ItemId", time_key="Time"):
        self.session_key = session_key
        self.item_key = item_key
        self.time_key = time_key

    def get_params(self):
        """Return the constructor parameters as a dict."""
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name != "self"}

    def set_params(self, **params):
        """Set constructor parameters by name (checked at the next ``fit``); return ``self``."""
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"unknown parameter {name!r} for {type(self).__name__}; "
                                 f"valid: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def fit(self, data, allow_pickle=False):
        """Fit the model on training events.

        Parameters
        ----------
        data : pandas.DataFrame or path
            Events with the session, item and time columns named by ``session_key``,
            ``item_key`` and ``time_key``. Not modified.
        allow_pickle : bool, default False
            Read a ``.pkl``/``.pickle`` path (a pickle runs code when it is read: trusted files only).

        Returns
        -------
        self

        Examples
        --------
        >>> import pandas as pd
        >>> events = pd.DataFrame({"SessionId": [1, 1, 2, 2], "ItemId": ["a", "b", "a", "b"],
        ...                        "Time": [0, 1, 2, 3]})
        >>> MarkovChain().fit(events).n_items_
        2
        """
        self._check_params()
        start = time.perf_counter()
        events = sessiondata.load_events(data, self.session_key, self.item_key, self.time_key,
                                         allow_pickle=allow_pickle)
        item_map = sessiondata.ItemMap.from_events(events[self.item_key])
        sessions = sessiondata.SessionData.from_events(
            events, item_map, session_key=self.session_key, item_key=self.item_key,
            time_key=self.time_key)
        self.item_ids_ = np.asarray(item_map.ids)
        self.n_items_ = len(item_map)
        support = np.bincount(sessions.item_idx, minlength=self.n_items_)
        self._levels, self._n_levels = _popularity_levels(support)
        self._fit_sessions(sessions, support)
        self.reset_state()
        logger.info("%s fitted on %d events, %d sessions, %d items in %.2f s", type(self).__name__,
                    len(sessions.item_idx), len(sessions.offsets) - 1, self.n_items_,
                    time.perf_counter() - start)
        return self

    def _check_params(self):
        """Check the model's own parameters; raise ValueError naming the bad one."""

    def _fit_sessions(self, sessions, support):
        """Build the model from ``SessionData`` and the item supports (events per item)."""
        raise NotImplementedError  # each model overrides this

    def reset_state(self, slots=None):
        """Forget the session history of the given slots (an int array; every slot when None)."""
        if slots is None or self._state is None:
            self._state = None
        else:
            self._state.length[np.asarray(slots, np.int64)] = 0

    def score_step(self, reset, input_idx, active):
        """Advance B parallel session slots by one event; score every slot's next item.

        Parameters
        ----------
        reset : array-like of bool, shape (B,)
            The slot starts a new session: its history is forgotten before ``input_idx`` is added.
            Before the first call (and after ``reset_state``) every slot starts afresh.
        input_idx : array-like of int, shape (B,)
            Item index (position in ``item_ids_``) of each slot's current event.
        active : array-like of bool, shape (B,)
            Inactive slots are neither updated nor scored (their rows are zero).

        Returns
        -------
        numpy.ndarray of float32, shape (B, n_items_)
            Higher is better.

        Examples
        --------
        >>> import pandas as pd
        >>> events = pd.DataFrame({"SessionId": [1, 1, 2], "ItemId": [7, 8, 8], "Time": [0, 1, 2]})
        >>> model = Pop().fit(events)
        >>> model.score_step([True], [0], [True]).shape
        (1, 2)
        """
        reset, input_idx, active = self._check_step(reset, input_idx, active)
        state = self._slot_state(len(active))
        rows = np.flatnonzero(active)
        state.update(np.flatnonzero(reset & active), rows, input_idx[rows])
        if len(rows) == len(active):
            return self._score_rows(state, rows)
        scores = np.zeros((len(active), self.n_items_), np.float32)  # (B, n_items)
        if len(rows):
            scores[rows] = self._score_rows(state, rows)
        return scores

    def _score_rows(self, state, rows):
        """Scores (len(rows), n_items_) float32 for the next item of the given slots."""
        raise NotImplementedError  # each model overrides this

    def _slot_state(self, batch_size):
        """The slot histories, created on the first call after fit or ``reset_state``."""
        if self._state is None:
            self._state = _SlotState(batch_size, self.n_items_)
        elif self._state.batch_size != batch_size:
            raise ValueError(f"batch size changed from {self._state.batch_size} to {batch_size}; "
                             "call reset_state() before a pass with another batch size")
        return self._state

    def _unscored_base(self):
        """Scores (n_items,) of items without evidence: popularity below 0, or all 0."""
        if self.pop_tiebreak:
            return (self._levels - self._n_levels).astype(np.float32)
        return np.zeros(self.n_items_, np.float32)


# ---- the models -------------------------------------------------------------------------------

class Pop(_Baseline):
    """Most popular items: score = number of training events of the item (same for all sessions).

    Items with equal counts tie.

    Parameters
    ----------
    session_key, item_key, time_key : str, default 'SessionId', 'ItemId', 'Time'
        Column names of the events.
    """

    def _fit_sessions(self, sessions, support):
        self._base = support.astype(np.float32)  # (n_items,)

    def _score_rows(self, state, rows):
        return np.tile(self._base, (len(rows), 1))


class SessionPop(_Baseline):
    """Session popularity: items of the current session by their count so far in the session.

    Ties in the count, and all items not in the session, are ordered by global popularity
    (training events): score = count * n_levels + popularity level, where the level is the dense
    rank of the item's training event count (0 = least popular) and n_levels the number of
    distinct counts. Items equal in both tie.

    Parameters
    ----------
    session_key, item_key, time_key : str, default 'SessionId', 'ItemId', 'Time'
        The session, item and time columns of the events (as for every model here).
    """

    def _fit_sessions(self, sessions, support):
        self._base = self._levels.astype(np.float32)  # count 0: popularity alone

    def _score_rows(self, state, rows):
        row, item, _, count = state.distinct_items(rows)
        values = _lexicographic(count, self._levels[item], self._n_levels)
        return _scores_from(self._base, row, item, values, len(rows))


class ItemKNN(_Baseline):
    """Item-to-item kNN: the similarity row of the session's last item.

    sim(i, j) = n_ij / ((n_i + lmbd)^alpha * (n_j + lmbd)^(1 - alpha)), where n_ij is the number
    of training sessions that contain both items and n_i the number containing i (sessions of one
    event count in n_i). An item is not its own neighbour: sim(i, i) = 0. With lmbd=0 and
    alpha=0.5 this is the cosine similarity of the items' binary session vectors.

    Parameters
    ----------
    lmbd : float >= 0, default 20
        Support regularisation: damps the similarity of rarely seen items.
    alpha : float in [0, 1], default 0.5
        Asymmetry: the share of the normalisation taken from the last item's support.
    pop_tiebreak : bool, default True
        Rank items with zero similarity below all others, by popularity (score level - n_levels,
        negative); False leaves them at 0.
    session_key, item_key, time_key : str, default 'SessionId', 'ItemId', 'Time'
        Column names of the events.
    """

    def __init__(self, lmbd=20.0, alpha=0.5, pop_tiebreak=True, session_key="SessionId",
                 item_key="ItemId", time_key="Time"):
        super().__init__(session_key, item_key, time_key)
        self.lmbd, self.alpha, self.pop_tiebreak = lmbd, alpha, pop_tiebreak

    def _check_params(self):
        _check_real("lmbd", self.lmbd, 0.0)
        _check_real("alpha", self.alpha, 0.0, 1.0)
        _check_bool("pop_tiebreak", self.pop_tiebreak)

    def _fit_sessions(self, sessions, support):
        in_session = _session_item_matrix(sessions, self.n_items_)
        co = (in_session.T @ in_session).tocsr()  # n_ij; n_i (>= 1 for every item) on the diagonal
        regularised = co.diagonal() + float(self.lmbd)
        co.setdiag(0)
        co.eliminate_zeros()
        left = sp.diags_array(regularised ** -self.alpha)
        right = sp.diags_array(regularised ** (self.alpha - 1.0))
        self._similarity = (left @ co @ right).tocsr().astype(np.float32)  # (n_items, n_items)
        self._base = self._unscored_base()

    def _score_rows(self, state, rows):
        return _scores_from_sparse(self._base, self._similarity[state.last_items(rows)])


class MarkovChain(_Baseline):
    """First-order Markov chain: counts of last item -> next item transitions in training sessions.

    Consecutive events of a training session give one transition each, repeats included (i -> i
    is counted). With ``pop_tiebreak`` equal counts, and the items never seen after the last
    item, are ordered by popularity (score = count * n_levels + popularity level, as in
    SessionPop); without it the score is the raw count.

    Parameters
    ----------
    pop_tiebreak : bool, default True
        Break ties in the transition count by global popularity.
    session_key, item_key, time_key : str, default 'SessionId', 'ItemId', 'Time'
        Column names of the events.
    """

    def __init__(self, pop_tiebreak=True, session_key="SessionId", item_key="ItemId",
                 time_key="Time"):
        super().__init__(session_key, item_key, time_key)
        self.pop_tiebreak = pop_tiebreak

    def _check_params(self):
        _check_bool("pop_tiebreak", self.pop_tiebreak)

    def _fit_sessions(self, sessions, support):
        items = sessions.item_idx
        follows = np.ones(max(len(items) - 1, 0), bool)  # event t + 1 is in the session of event t
        follows[sessions.offsets[1:-1] - 1] = False
        pairs = (items[:-1][follows], items[1:][follows])
        ones = np.ones(len(pairs[0]), np.float64)
        shape = (self.n_items_, self.n_items_)
        self._transitions = sp.csr_array((ones, pairs), shape=shape)  # duplicates are summed
        # score of a never-seen transition (count 0): its popularity level, or 0
        self._base = (self._levels if self.pop_tiebreak else np.zeros(self.n_items_)).astype(
            np.float32)

    def _score_rows(self, state, rows):
        counts = self._transitions[state.last_items(rows)]  # (R, n_items) sparse
        if self.pop_tiebreak:
            counts.data = _lexicographic(counts.data, self._levels[counts.indices], self._n_levels)
        return _scores_from_sparse(self._base, counts)


class SKNN(_Baseline):
    """Session-based kNN (Jannach & Ludewig 2017).

    For the current session (its item set X so far): the candidates are the ``sample_size`` most
    recent training sessions that share an item with X (recency: a session's first event time,
    ties by session id); the ``k`` most similar candidates are the neighbours (ties: the more
    recent first), and an item's score is the sum of the similarities of the neighbours that
    contain it. Items of the current session are scored like any other.

    Parameters
    ----------
    k : int >= 1, default 100
        Number of neighbours.
    sample_size : int >= 1 or None, default 500
        Number of most recent candidate sessions; None uses every session that shares an item
        (exact but slow: time and memory per step grow with the number of candidates).
    similarity : {'cosine', 'jaccard'}, default 'cosine'
        cosine = |X & s| / sqrt(|X| |s|); jaccard = |X & s| / |X | s| (binary item sets).
    pop_tiebreak : bool, default True
        Rank items no neighbour contains below all others, by popularity (score level - n_levels,
        negative); False leaves them at 0.
    session_key, item_key, time_key : str, default 'SessionId', 'ItemId', 'Time'
        Column names of the events.
    """

    def __init__(self, k=100, sample_size=500, similarity="cosine", pop_tiebreak=True,
                 session_key="SessionId", item_key="ItemId", time_key="Time"):
        super().__init__(session_key, item_key, time_key)
        self.k, self.sample_size, self.similarity, self.pop_tiebreak = k, sample_size, similarity, pop_tiebreak

    def _check_params(self):
        _check_int("k", self.k, 1)
        if self.sample_size is not None:
            _check_int("sample_size", self.sample_size, 1)
        _check_choice("similarity", self.similarity, ("cosine", "jaccard"))
        _check_bool("pop_tiebreak", self.pop_tiebreak)

    def _fit_sessions(self, sessions, support):
        by_recency = np.argsort(sessions.start_time, kind="stable")
        # Training sessions renumbered oldest first: a larger index is a more recent session.
        self._sessions = _session_item_matrix(sessions, self.n_items_)[by_recency]
        self._n_sample = self.sample_size or self._sessions.shape[0]
        # A session among the n_sample most recent ones sharing an item with X is among the
        # n_sample most recent sessions of every item it shares with X: the rest are never needed.
        self._item_sessions = _keep_last_per_row(self._sessions.T.tocsr(), self._n_sample)
        self._base = self._unscored_base()

    def _weights(self, position, length):
        """Weight of an item whose last occurrence is at ``position`` (1-based) of ``length``."""
        return np.ones(len(position))

    def _score_rows(self, state, rows):
        row, item, position, _ = state.distinct_items(rows)
        weight = self._weights(position, state.length[rows][row])
        current = sp.csr_array((weight, (row, item)), shape=(len(rows), self.n_items_))
        # By the argument in _fit_sessions, this product holds the exact weighted overlap of
        # every kept candidate: all the items it shares with X are counted.
        overlap = _keep_last_per_row((current @ self._item_sessions).tocsr(), self._n_sample)
        neighbours = self._nearest(self._similarities(overlap, current))
        return _scores_from_sparse(self._base, (neighbours @ self._sessions).tocsr())

    def _similarities(self, overlap, current):
        """Replace each candidate's weighted overlap O by its similarity to the current session."""
        candidate_row = np.repeat(np.arange(overlap.shape[0]), np.diff(overlap.indptr))
        size = np.diff(self._sessions.indptr)[overlap.indices]  # |s|
        if self.similarity == "jaccard":  # sum(min) / sum(max) = O / (|s| + sum(w) - O)
            total = current.sum(axis=1)[candidate_row]
            overlap.data = overlap.data / (size + total - overlap.data)
        else:
            norm = np.sqrt(current.power(2).sum(axis=1))[candidate_row]
            overlap.data = overlap.data / (norm * np.sqrt(size))
        return overlap

    def _nearest(self, candidates):
        """Keep each row's k most similar candidates (ties: the more recent, larger index)."""
        counts = np.diff(candidates.indptr)
        if counts.max() <= self.k:
            return candidates
        last = candidates.indptr[1:] - 1  # each row's most recent candidate (sorted indices)
        from_end = np.repeat(last, counts) - np.arange(candidates.nnz)
        padded = np.full((len(counts), counts.max()), -np.inf)  # (R, widest row), recent first
        padded[np.repeat(np.arange(len(counts)), counts), from_end] = candidates.data
        best = np.argsort(-padded, axis=1, kind="stable")[:, :self.k]  # stable: recent first
        entry = (last[:, None] - best)[best < counts[:, None]]
        indptr = np.concatenate(([0], np.cumsum(np.minimum(counts, self.k))))
        data, indices = candidates.data[entry], candidates.indices[entry]
        return sp.csr_array((data, indices, indptr), shape=candidates.shape)


class VSKNN(SKNN):
    """Vector session-based kNN (V-SKNN, Ludewig & Jannach 2018): SKNN with a decaying session.

    The current session is a weighted item vector: an item whose last occurrence is at position
    p (1-based) of the n events so far weighs w(p, n), 1 for the last event. With the weighted
    overlap O = sum(w_j for j in X & s): cosine = O / (||w|| sqrt(|s|)), jaccard = the weighted
    Jaccard sum(min) / sum(max) = O / (|s| + sum(w) - O). Everything else is as in SKNN.

    Parameters
    ----------
    k, sample_size, similarity, pop_tiebreak : as in SKNN, default 100, 500, 'cosine', True
        See SKNN.
    weighting : {'linear', 'quadratic', 'log'}, default 'linear'
        w = p / n (linear), (p / n)^2 (quadratic) or 1 / log2(n - p + 2) (log).
    session_key, item_key, time_key : str, default 'SessionId', 'ItemId', 'Time'
        Column names of the events.
    """

    def __init__(self, k=100, sample_size=500, similarity="cosine", weighting="linear",
                 pop_tiebreak=True, session_key="SessionId", item_key="ItemId", time_key="Time"):
        super().__init__(k=k, sample_size=sample_size, similarity=similarity,
                         pop_tiebreak=pop_tiebreak, session_key=session_key, item_key=item_key,
                         time_key=time_key)
        self.weighting = weighting

    def _check_params(self):
        super()._check_params()
        _check_choice("weighting", self.weighting, ("linear", "quadratic", "log"))

    def _weights(self, position, length):
        if self.weighting == "linear":
            return position / length
        if self.weighting == "quadratic":
            return (position / length) ** 2
        return 1.0 / np.log2(length - position + 2.0)
