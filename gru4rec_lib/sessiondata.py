"""Host-side data: validated events, the item map, sorted sessions, the session-parallel schedule.

Only numpy and pandas are used here, so everything is tested without a compute backend. The loop-facing output is plain numpy arrays.
"""
import heapq
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

_READERS = {
    ".tsv": "tab-separated", ".txt": "tab-separated", ".csv": "comma-separated",
    ".parquet": "parquet", ".pkl": "pickle", ".pickle": "pickle",
}


class NotFittedError(ValueError, AttributeError):
    """A model (GRU4Rec or a baseline) was used before ``fit``; a ValueError and AttributeError, as sklearn."""


# ---------------------------------------------------------------- loading and validation
def load_events(data, session_key="SessionId", item_key="ItemId", time_key="Time", user_key=None,
                allow_pickle=False):
    """Read and validate events; return a new frame holding only the needed columns.

    Parameters
    ----------
    data : pandas.DataFrame or str or pathlib.Path
        Events, or a file: ``.tsv``/``.txt`` (tab-separated), ``.csv``, ``.parquet``,
        ``.pkl``/``.pickle``. A pickle runs code when it is read: it is read only with
        ``allow_pickle=True``, for files you trust. A text file's id columns are read as text
        (`read_text`): '007' and '7' are two ids; plainly written integers become int64.
    session_key, item_key, time_key : str
        Column names of the session id, the item id and the time stamp. ``session_key`` may be
        None when ``user_key`` is given (user histories without sessions).
    user_key : str or None
        Column name of the user id, also read and checked when given.
    allow_pickle : bool, default False
        Read ``.pkl``/``.pickle`` files (else they raise ValueError before anything is read).

    Returns
    -------
    pandas.DataFrame
        A copy with exactly the columns ``[user_key, session_key, item_key, time_key]`` (those
        given); the index is kept. A datetime64 time column is converted to int64 nanoseconds.

    Raises
    ------
    KeyError
        A column is missing (the message lists the available columns).
    ValueError
        Empty data, missing values, a non-numeric or non-finite time, an unknown file suffix, a
        pickle without ``allow_pickle=True``.
    FileNotFoundError
        ``data`` is a path that does not exist.

    Examples
    --------
    >>> df = pd.DataFrame({"SessionId": [1, 1], "ItemId": [5, 7], "Time": [0.0, 1.0]})
    >>> load_events(df).shape
    (2, 3)
    """
    keys = {"user_key": user_key, "session_key": session_key, "item_key": item_key, "time_key": time_key}
    if session_key is None and user_key is None:
        raise ValueError("session_key is None: pass a session column, or user_key for user histories")
    keys = {keyword: column for keyword, column in keys.items() if column is not None}
    if len(set(keys.values())) < len(keys):
        raise ValueError(f"{', '.join(keys)} must be distinct, got {keys}")
    frame = _read_frame(data, set(keys.values()), allow_pickle, id_columns=[c for c in keys.values() if c != time_key])
    for keyword, column in keys.items():
        _check_column(frame, column, keyword)
    if len(frame) == 0:
        raise ValueError("no events: the data has 0 rows")
    events = frame[list(keys.values())].copy(deep=True)
    for column in events.columns:
        _check_missing(events[column], column)
    events[time_key] = _numeric_time(events[time_key], time_key)
    return events


def _read_frame(data, columns, allow_pickle=False, id_columns=()):
    if isinstance(data, pd.DataFrame):
        return data
    if not isinstance(data, (str, Path)):
        raise TypeError(f"data must be a DataFrame or a file path, got {type(data).__name__}")
    path = Path(data)
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise ValueError(f"unknown file suffix {suffix!r} for {path}; "
                         f"supported: {', '.join(_READERS)}")
    if not path.is_file():
        raise FileNotFoundError(f"events file not found: {path}")
    if _READERS[suffix] == "pickle" and not allow_pickle:
        raise ValueError(f"{path} is a pickle: reading a pickle runs code from the file, so it is refused "
                         "by default; pass allow_pickle=True if you trust the file, or convert it to "
                         ".parquet or .tsv")
    logger.debug("reading %s events from %s", _READERS[suffix], path)
    if suffix in (".tsv", ".txt", ".csv"):
        sep = "," if suffix == ".csv" else "\t"
        frame = read_text(path, sep, id_columns, usecols=lambda name: name in columns)  # skip unneeded columns
        if len(frame.columns) < len(set(columns)):  # let the column check list the file's columns
            return pd.read_csv(path, sep=sep, nrows=0)
        return frame
    if suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_pickle(path)


def read_text(path, sep, id_columns, **read_csv_args):
    """A tab- or comma-separated file, its `id_columns` read as text (as the authors read item
    ids): parsed as numbers, '007' and '7' (or '1' and '1.0') would become one id. A column of
    integers written plainly (no leading zeros, sign or spaces) becomes int64, which is the same
    ids; any other keeps the strings."""
    if _numbers_written_plainly(path, sep):  # the usual case, read 30x faster: ids parse to the same ids
        frame = pd.read_csv(path, sep=sep, **read_csv_args)
        if all(_exact_ids(frame[column]) for column in id_columns if column in frame.columns):
            return frame
    frame = pd.read_csv(path, sep=sep, dtype={column: str for column in id_columns}, **read_csv_args)
    for column in id_columns:
        if column in frame.columns:
            frame[column] = _ids_from_text(frame[column])
    return frame


def _exact_ids(values):
    """Whether a column pandas parsed holds its ids as written: integers, or strings only."""
    if values.dtype.kind in "iu":
        return True
    return pd.api.types.is_string_dtype(values) and pd.api.types.infer_dtype(values, skipna=False) == "string"


_BYTE = np.arange(256)
_DIGIT = (_BYTE >= ord("0")) & (_BYTE <= ord("9"))


def _numbers_written_plainly(path, sep, block=1 << 26):
    """Whether no field of a text file starts with '+', a space, a quote, a zero before a digit or
    '-0' (but '-0.'), or ends with a space: a file where parsing a number and writing it back gives
    the text again, so that integer ids parse to distinct numbers. Scanned in blocks, vectorised."""
    separator = np.isin(_BYTE, [ord(sep), ord("\n"), ord("\r")])
    odd_start = np.isin(_BYTE, [ord("+"), ord(" "), ord('"'), ord("'")])
    zero, minus, dot, space = ord("0"), ord("-"), ord("."), ord(" ")
    carried = b"\n\n"  # a line end before the first field; then each block's last 4 bytes lead the next
    with open(path, "rb") as file:
        while True:
            chunk = file.read(block)
            data = np.frombuffer(carried + chunk + (b"" if chunk else b"\n\n\n\n"), np.uint8)
            ends = np.flatnonzero(separator[data[1:-3]]) + 1  # the last three are looked at with the next block
            starts = ends + 1
            first, second, third = data[starts], data[starts + 1], data[starts + 2]
            if (odd_start[first].any() or ((first == zero) & _DIGIT[second]).any()
                    or ((first == minus) & (second == zero) & (third != dot)).any()
                    or (data[ends - 1] == space).any()):
                return False
            if not chunk:
                return True
            carried = bytes(data[-4:])


_POWERS_OF_TEN = 10 ** np.arange(1, 19, dtype=np.int64)


def _ids_from_text(values):
    """`values` (strings) as int64 when each is an integer written plainly, else unchanged."""
    if len(values) == 0 or values.isna().any():
        return values  # missing ids are refused later, by name
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.dtype.kind != "i":
        return values
    ints = numbers.to_numpy()
    if (ints == np.iinfo(np.int64).min).any():
        return values
    magnitude = np.abs(ints)
    plain_length = np.searchsorted(_POWERS_OF_TEN, magnitude, side="right") + 1 + (ints < 0)
    if not np.array_equal(plain_length, values.str.len().to_numpy()):
        return values  # a leading zero, '+' or a space somewhere: '07' and '7' stay apart
    return pd.Series(ints, index=values.index, name=values.name)


def _check_column(frame, column, keyword):
    found = int(np.sum(frame.columns == column))
    if found == 0:
        available = ", ".join(map(str, frame.columns))
        raise KeyError(f"column {column!r} not found; pass {keyword}= (columns: {available})")
    if found > 1:
        raise ValueError(f"column {column!r} appears {found} times; rename the duplicates")


def _check_missing(values, column):
    missing = values.isna().to_numpy()
    if missing.any():
        first = values.index[np.argmax(missing)]
        raise ValueError(f"column {column!r} has {int(missing.sum())} missing values (NaN/None), "
                         f"first at row label {first!r}; drop or fill them first")


def _numeric_time(values, column):
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.as_unit("ns").astype("int64")  # conformance: datetimes become int64 ns
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise ValueError(f"column {column!r} has dtype {values.dtype}; time must be numeric or "
                         "datetime64; convert it with pd.to_numeric or pd.to_datetime")
    infinite = ~np.isfinite(values.to_numpy(dtype=np.float64))
    if infinite.any():
        first = values.index[np.argmax(infinite)]
        raise ValueError(f"column {column!r} has {int(infinite.sum())} infinite values, "
                         f"first at row label {first!r}")
    return values


class SequenceReader:
    """Reads events into sequences the way a model groups them: by session, or by user.

    Sessions (``user_key`` None) group by ``session_key``. User histories group by ``user_key``;
    the session column is read only when ``reset_between_sessions`` marks breaks with it.

    Examples
    --------
    >>> reader = SequenceReader("SessionId", user_key="UserId")
    >>> events = reader.load(pd.DataFrame({"UserId": [1, 1], "ItemId": [5, 7], "Time": [0, 1]}))
    >>> reader.group(events, ItemMap([5, 7])).offsets.tolist()
    [0, 2]
    """

    def __init__(self, session_key="SessionId", item_key="ItemId", time_key="Time", user_key=None,
                 reset_between_sessions=False):
        self.item_key, self.time_key, self.user_key = item_key, time_key, user_key
        self.session_key = session_key if user_key is None or reset_between_sessions else None
        self.sequence_key = user_key or session_key
        self.break_key = session_key if user_key is not None and reset_between_sessions else None

    def load(self, data, allow_pickle=False):
        """Validated events with the columns this grouping needs (:func:`load_events`)."""
        return load_events(data, self.session_key, self.item_key, self.time_key, self.user_key, allow_pickle)

    def group(self, events, item_map, drop_unknown=False, keep_rows=False):
        """:meth:`SessionData.from_events` of loaded events, by sequence, with the breaks."""
        return SessionData.from_events(events, item_map, self.sequence_key, self.item_key, self.time_key,
                                       drop_unknown=drop_unknown, break_key=self.break_key, keep_rows=keep_rows)


def is_int(value):
    """Whether `value` is an integer (Python or numpy), bools excluded: the parameter checks' test."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_real(value):
    """Whether `value` is an integer or a float (Python or numpy), bools excluded."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def id_kind(value):
    """'int', 'str' or the type name: the kind of an item id, for type checks."""
    if isinstance(value, (str, np.str_)):
        return "str"
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return "int"
    return type(value).__name__


def wrong_kind_ids(unknown, model_ids):
    """The ids among `unknown` (ids a model does not know) whose kind differs from the model's ids'
    (``'4'`` for a model with int ids): (the model's kind, those ids in order). Such an id can
    never match, which a user who converted one column and not the other would want to be told."""
    expected = id_kind(model_ids[0]) if len(model_ids) else None
    return expected, [item for item in unknown if expected is not None and id_kind(item) != expected]


def check_item_id_types(items, known=None):
    """Refuse item ids of more than one kind (``4`` and ``'4'``), here or against the ``known`` ids.

    Mixed ids would train as distinct items that no model file can store; ints and strings each
    work alone. Raises TypeError naming an example of each kind.
    """
    dtype = np.asarray(items).dtype if not isinstance(items, pd.Series) else items.dtype
    if dtype != object and (known is None or np.asarray(known).dtype.kind == dtype.kind):
        return  # one numpy dtype: one kind
    values = pd.Series(pd.unique(pd.Series(items, dtype=object)), dtype=object)
    if known is not None and len(known):
        values = pd.concat([pd.Series(np.asarray(known[:1]), dtype=object), values], ignore_index=True)
    kinds = values.map(id_kind)
    if kinds.nunique() > 1:
        examples = ", ".join(f"{values[kinds == kind].iloc[0]!r} ({kind})" for kind in kinds.unique())
        raise TypeError(f"item ids of mixed types: {examples}; convert the item column to one type, e.g. "
                        "events[item_key].astype(str)" + (" (the fitted model's ids come first)" if known is not None else ""))


def id_array(values):
    """Ids a user gave as a numpy array, each keeping its type (np.asarray([2, '9']) makes 2 the string '2')."""
    if isinstance(values, (pd.Series, pd.Index)):
        values = values.to_numpy()
    if isinstance(values, np.ndarray):
        return values
    return pd.Index(list(values), dtype=object).to_numpy()


# ---------------------------------------------------------------- item map
class ItemMap:
    """Map between item ids (ints, strings, any hashable) and contiguous indices 0..n-1.

    Parameters
    ----------
    ids : array-like
        Unique item ids; index ``i`` stands for ``ids[i]``.

    Examples
    --------
    >>> m = ItemMap(["a", "b"]).extended(["c", "a"])
    >>> m.indices(["c", "x"]).tolist()
    [2, -1]
    """

    def __init__(self, ids=()):
        if np.ndim(ids) != 1:
            raise ValueError(f"ids must be one-dimensional, got shape {np.shape(ids)}")
        ids = np.array(pd.Index(ids))  # via pandas: np.array([1, "a"]) would make "1" a string
        kind = ids.dtype.kind
        if not len(ids) or kind == "i" or (kind == "u" and ids.dtype.itemsize < 8):
            ids = ids.astype(np.int64)
        elif ids.dtype.kind in "US":
            ids = ids.astype(object)  # one string dtype whatever the source
        index = pd.Index(ids, dtype=object if ids.dtype == object else None)
        if not index.is_unique:
            duplicates = index[index.duplicated()].unique()[:5].tolist()
            raise ValueError(f"item ids must be unique; duplicated: {duplicates}")
        ids.flags.writeable = False  # a private copy, so the caller's array stays writeable
        self._ids, self._index = ids, index

    @property
    def ids(self):
        """numpy.ndarray: read-only item ids in index order."""
        return self._ids

    def __len__(self):
        return len(self._ids)

    def __repr__(self):
        return f"ItemMap(n_items={len(self)})"

    def indices(self, item_ids, missing=-1):
        """Return the int32 index of each id, ``missing`` for ids not in the map."""
        found = self._index.get_indexer(pd.Index(item_ids))
        if missing != -1:
            found = np.where(found < 0, missing, found)
        return found.astype(np.int32)

    def lookup(self, item_ids, what="item ids"):
        """int32 indices of ids a user gave (a list, array or Series), each id looked up as itself:
        ['3', 4] is not ['3', '4'] (as np.asarray would make it), and True is not the id 1.
        ValueError naming the unknown ids (and those of another type than the map's ids)."""
        values = id_array(item_ids)
        found = self.indices(values)
        if len(values) and self._ids.dtype.kind != "b":
            found[[isinstance(v, (bool, np.bool_)) for v in values]] = -1
        if (found < 0).any():
            unknown = values[found < 0]
            expected, wrong = wrong_kind_ids(unknown, self._ids)
            hint = (f"; {len(wrong)} of another type than the model's {expected} ids, e.g. {wrong[0]!r} "
                    f"({id_kind(wrong[0])})" if wrong else "")
            raise ValueError(f"{len(unknown)} {what} are unknown to the model, e.g. {unknown[:5].tolist()}{hint}")
        return found

    def extended(self, item_ids):
        """Return a new map: old ids keep their index, unseen ids follow in order of first use."""
        candidates = pd.Index(item_ids).unique()
        unseen = np.asarray(candidates)[self.indices(candidates) < 0]
        if len(self) == 0:
            return ItemMap(unseen)
        if len(unseen) == 0:
            return self
        old = self._ids
        if old.dtype.kind != unseen.dtype.kind:  # e.g. ints then strings: keep both exactly
            old, unseen = old.astype(object), unseen.astype(object)
        return ItemMap(np.concatenate([old, unseen]))

    @classmethod
    def from_events(cls, item_column):
        """Build a map from an item column; ids are numbered in order of first appearance."""
        return cls(pd.Index(item_column).unique())


# ---------------------------------------------------------------- sorted sessions
class SessionData:
    """Events as item indices sorted by (session, time), with session offsets.

    Attributes
    ----------
    item_idx : numpy.ndarray
        int32 ``[n_events]`` item indices, sorted by session then time (stable).
    offsets : numpy.ndarray
        int64 ``[n_sessions + 1]``; session ``s`` is ``item_idx[offsets[s]:offsets[s + 1]]``.
    session_ids : numpy.ndarray
        ``[n_sessions]`` original session ids, sorted; session ``s`` has id ``session_ids[s]``.
    start_time : numpy.ndarray
        float64 ``[n_sessions]`` time of each session's first event.
    n_dropped : int
        Events dropped because their item was unknown.
    breaks : numpy.ndarray or None
        bool ``[n_events]``: the event starts a new sub-sequence inside its sequence (a new
        session inside a user's history); the hidden state is zeroed before it is fed. None: no
        breaks. A "session" here is whatever the grouping key names: a session, or a user.
    rows : numpy.ndarray or None
        int64 ``[n_events]``: the row position in the source frame of each sorted event (from
        ``from_events(..., keep_rows=True)``), else None.
    """

    def __init__(self, item_idx, offsets, session_ids, start_time, n_dropped=0, breaks=None, rows=None):
        self.item_idx = np.asarray(item_idx, dtype=np.int32)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.session_ids = np.asarray(session_ids)
        self.start_time = np.asarray(start_time, dtype=np.float64)
        self.n_dropped = int(n_dropped)
        self.breaks = None if breaks is None else np.asarray(breaks, dtype=bool)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)

    def __repr__(self):
        return (f"SessionData(n_events={self.n_events}, n_sessions={self.n_sessions}, "
                f"n_dropped={self.n_dropped})")

    @property
    def n_events(self):
        return len(self.item_idx)

    @property
    def n_sessions(self):
        return len(self.offsets) - 1

    @property
    def n_steps(self):
        """Number of (input, target) pairs: sum over sessions of max(length - 1, 0)."""
        return int(np.maximum(np.diff(self.offsets) - 1, 0).sum())

    @classmethod
    def from_events(cls, events, item_map, session_key="SessionId", item_key="ItemId",
                    time_key="Time", drop_unknown=False, break_key=None, keep_rows=False):
        """Sort validated events (from :func:`load_events`) into sessions of item indices.

        Parameters
        ----------
        events : pandas.DataFrame
            Output of :func:`load_events`; not modified.
        item_map : ItemMap
            Maps item ids to indices.
        drop_unknown : bool
            Drop events whose item is not in ``item_map`` (counted in ``n_dropped``; sessions
            left empty vanish). If False, unknown items raise ``ValueError``.
        break_key : str or None
            A column whose value changes mark ``breaks`` inside each sequence, in time order
            (e.g. ``session_key="UserId", break_key="SessionId"``: user histories whose hidden
            state restarts with each session).
        keep_rows : bool
            Record each sorted event's row position in ``events`` (``rows``).

        Examples
        --------
        >>> ev = load_events(pd.DataFrame({"SessionId": [2, 1, 2], "ItemId": ["a", "b", "a"],
        ...                                "Time": [1, 5, 0]}))
        >>> data = SessionData.from_events(ev, ItemMap.from_events(ev["ItemId"]))
        >>> data.offsets.tolist(), data.session_ids.tolist()
        ([0, 1, 3], [1, 2])
        """
        item_idx = item_map.indices(events[item_key].to_numpy())
        known = item_idx >= 0
        n_dropped = int(len(known) - known.sum())
        if n_dropped and not drop_unknown:
            examples = pd.unique(events[item_key].to_numpy()[~known])
            raise ValueError(f"{len(examples)} item ids are not in the item map "
                             f"(e.g. {examples[:5].tolist()}); pass drop_unknown=True to drop "
                             f"their {n_dropped} events")
        codes, session_ids = pd.factorize(events[session_key].to_numpy()[known], sort=True)
        time = events[time_key].to_numpy()[known]
        order = np.lexsort((time, codes))  # stable: time ties keep input order
        counts = np.bincount(codes, minlength=len(session_ids))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        breaks = None
        if break_key is not None:
            parts = pd.factorize(events[break_key].to_numpy()[known])[0][order]
            breaks = np.concatenate([[False], parts[1:] != parts[:-1]])
            breaks[offsets[:-1]] = False  # a sequence's first event starts it anyway
        return cls(item_idx[known][order], offsets, np.asarray(session_ids),
                   time[order][offsets[:-1]].astype(np.float64), n_dropped, breaks,
                   np.flatnonzero(known)[order] if keep_rows else None)

    def item_support(self, n_items):
        """Return int64 ``[n_items]``: the number of events of each item index."""
        if self.n_events and self.item_idx.max() >= n_items:
            raise ValueError(f"n_items={n_items} is too small: item index "
                             f"{int(self.item_idx.max())} occurs")
        return np.bincount(self.item_idx, minlength=n_items).astype(np.int64)

    def session_order(self, time_sort=True, rng=None):
        """Return the int64 order in which sessions are fed (conformance: session order).

        ``rng`` given: a random permutation (``train_random_order``); else ``time_sort``: by
        start time, ties in session-id order; else session-id order.
        """
        if rng is not None:
            return rng.permutation(self.n_sessions).astype(np.int64)
        if time_sort:
            return np.argsort(self.start_time, kind="stable").astype(np.int64)
        return np.arange(self.n_sessions, dtype=np.int64)


# ---------------------------------------------------------------- session-parallel schedule
class Chunk(NamedTuple):
    """K consecutive steps of B slots; all arrays have shape (K, B)."""

    inputs: np.ndarray  # int32 item index fed at each step; 0 where inactive
    targets: np.ndarray  # int32 next item; 0 where inactive
    reset: np.ndarray  # bool: zero the slot's hidden state before this step (a new sequence or a
    # break inside one); True where inactive
    active: np.ndarray  # bool: a real step
    session: np.ndarray  # int64 session number (index into SessionData); -1 where inactive
    position: np.ndarray  # int32 position of the input event in its session; -1 where inactive


class _Plan(NamedTuple):
    session: np.ndarray  # usable sessions in the order they enter a slot
    slot: np.ndarray  # the slot each one takes
    start: np.ndarray  # the step of its first input (non-decreasing)
    n_steps: np.ndarray  # its length - 1
    total: int  # steps until the last slot runs dry


def _plan(data, order, batch_size):
    """Give every usable session its slot and first step (conformance: schedule) with one heap pass."""
    order = np.asarray(order)
    if order.ndim != 1 or (order.size and order.dtype.kind not in "iu"):
        raise ValueError(f"order must be a 1-d integer array of session numbers, "
                         f"got {order.dtype} with shape {order.shape}")
    order = order.astype(np.int64, copy=False)
    if order.size and (order.min() < 0 or order.max() >= data.n_sessions):
        raise ValueError(f"order holds session numbers outside 0..{data.n_sessions - 1}")
    _check_positive("batch_size", batch_size)
    steps = np.diff(data.offsets)[order] - 1
    session = order[steps > 0]
    steps = steps[steps > 0]
    # Heap key = free_step * B + slot: the earliest free slot, lowest slot first on ties.
    heap, keys = list(range(batch_size)), np.empty(len(session), dtype=np.int64)
    for i, n in enumerate((steps * batch_size).tolist()):
        keys[i] = heapq.heapreplace(heap, heap[0] + n)
    start, slot = np.divmod(keys, batch_size)
    total = int((start + steps).max()) if len(session) else 0
    return _Plan(session, slot, start, steps, total)


def n_chunks(data, order, batch_size, steps_per_chunk):
    """Return how many chunks :func:`session_parallel_schedule` yields; O(n_sessions)."""
    _check_positive("steps_per_chunk", steps_per_chunk)
    return -(-_plan(data, order, batch_size).total // steps_per_chunk)


def n_steps(data, order, batch_size):
    """Return how many steps (mini-batches) the schedule has before its padding; O(n_sessions)."""
    return _plan(data, order, batch_size).total


def _check_positive(name, value):
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def session_parallel_schedule(data, order, batch_size, steps_per_chunk):
    """Yield the session-parallel mini-batch schedule (conformance: schedule) in fixed-shape chunks.

    B = ``batch_size`` slots each hold one session; sessions enter in ``order``, those with
    fewer than 2 events are skipped. Each step a busy slot feeds its current item and targets
    the next; a finished slot takes the next unused session (lowest slot first on ties) with
    ``reset=True``, or stays inactive once none is left. The last chunk is padded with
    inactive steps. Memory is O(K * B + n_sessions).

    Parameters
    ----------
    data : SessionData
    order : array-like of int
        Session numbers in feeding order, normally :meth:`SessionData.session_order`.
    batch_size : int
        B, the number of slots.
    steps_per_chunk : int
        K, the number of steps per chunk.

    Yields
    ------
    Chunk
        Arrays of shape (K, B).

    Examples
    --------
    >>> ev = load_events(pd.DataFrame({"SessionId": 1, "ItemId": [4, 5, 6], "Time": [0, 1, 2]}))
    >>> data = SessionData.from_events(ev, ItemMap([4, 5, 6]))
    >>> [c.targets.tolist() for c in session_parallel_schedule(data, [0], 1, 2)]
    [[[1], [2]]]
    """
    _check_positive("steps_per_chunk", steps_per_chunk)
    return _chunks(data, _plan(data, order, batch_size), batch_size, steps_per_chunk)


def schedule_definition(data, order, batch_size):
    """The session-parallel schedule as a plain step-by-step loop over the slots: its definition.

    This is what :func:`session_parallel_schedule` computes, written the slow and obvious way
    (O(steps * B) Python operations); the fast, vectorised schedule must equal it step for step
    (the tests compare them), followed only by inactive padding to a multiple of K.

    Before the first step, slot b takes the b-th usable session of ``order`` (sessions with
    fewer than 2 events are skipped). At every step each busy slot feeds its session's current
    event and targets the next one (``reset`` on the session's first step); then, lowest slot
    first, every slot that has just fed its session's second-to-last event takes the next unused
    session, or goes idle when none is left. The loop ends when every slot is idle.

    Parameters
    ----------
    data : SessionData
    order : array-like of int
        Session numbers in feeding order.
    batch_size : int
        B, the number of slots.

    Returns
    -------
    Chunk
        One chunk holding every step: arrays (n_steps, B), no padding.
    """
    _check_positive("batch_size", batch_size)
    lengths = np.diff(data.offsets)
    queue = [int(s) for s in order if lengths[s] >= 2]
    slot_session = [queue[b] if b < len(queue) else -1 for b in range(batch_size)]
    slot_position, taken, steps = [0] * batch_size, min(batch_size, len(queue)), []
    while any(s >= 0 for s in slot_session):
        steps.append([_slot_step(data, s, p) for s, p in zip(slot_session, slot_position)])
        for b, session in enumerate(slot_session):
            if session < 0:
                continue
            slot_position[b] += 1
            if slot_position[b] == lengths[session] - 1:  # its last target was just fed
                slot_session[b], slot_position[b] = (queue[taken] if taken < len(queue) else -1), 0
                taken += 1
    chunk = _inactive_chunk((len(steps), batch_size))
    for k, row in enumerate(steps):
        for b, values in enumerate(row):
            if values is not None:
                for name, value in zip(Chunk._fields, values):
                    getattr(chunk, name)[k, b] = value
    return chunk


def _slot_step(data, session, position):
    """(input, target, reset, active, session, position) of one busy slot's step; None when idle."""
    if session < 0:
        return None
    event = data.offsets[session] + position
    reset = position == 0 or (data.breaks is not None and bool(data.breaks[event]))
    return data.item_idx[event], data.item_idx[event + 1], reset, True, session, position


def _chunks(data, plan, batch_size, steps_per_chunk):
    carry = np.empty(0, dtype=np.int64)  # plan rows still running at the chunk start
    for first in range(0, plan.total, steps_per_chunk):
        last = first + steps_per_chunk
        lo, hi = np.searchsorted(plan.start, [first, last])
        rows = np.concatenate([carry, np.arange(lo, hi)])
        yield _fill_chunk(data, plan, rows, first, steps_per_chunk, batch_size)
        carry = rows[plan.start[rows] + plan.n_steps[rows] > last]


def _fill_chunk(data, plan, rows, first, n_steps, batch_size):
    """Write the steps of the plan rows that fall in ``[first, first + n_steps)``."""
    begin = np.maximum(plan.start[rows], first)
    count = np.minimum(plan.start[rows] + plan.n_steps[rows], first + n_steps) - begin
    row = np.repeat(rows, count)
    # Concatenated aranges begin[j] .. begin[j] + count[j] - 1, one per plan row, without a loop.
    step = np.arange(count.sum()) + np.repeat(begin - (np.cumsum(count) - count), count)
    position = step - plan.start[row]
    session = plan.session[row]
    event = data.offsets[session] + position
    where = (step - first, plan.slot[row])
    chunk = _inactive_chunk((n_steps, batch_size))
    chunk.inputs[where] = data.item_idx[event]
    chunk.targets[where] = data.item_idx[event + 1]
    chunk.reset[where] = position == 0 if data.breaks is None else (position == 0) | data.breaks[event]
    chunk.active[where] = True
    chunk.session[where] = session
    chunk.position[where] = position
    return chunk


def _inactive_chunk(shape):
    return Chunk(inputs=np.zeros(shape, np.int32), targets=np.zeros(shape, np.int32),
                 reset=np.ones(shape, bool), active=np.zeros(shape, bool),
                 session=np.full(shape, -1, np.int64), position=np.full(shape, -1, np.int32))
