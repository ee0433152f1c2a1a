"""Train/test splits of user histories, with sessions cut from gaps in time.

A log of user events (``UserId``, ``ItemId``, ``Time``, any other columns) is split per user:

- ``last=N``: each user's last ``N`` events (in time order) are the test, the earlier ones the
  history. A user with fewer than ``N + min_history`` events has no test: all of their events go
  to the history (they still train the model).
- ``cut_time=T``: events at or after ``T`` are the test, earlier ones the history. A user with
  fewer than ``min_history`` events before ``T`` has no test, and their events from ``T`` on are
  dropped (neither frame: the history must end before ``T``).

Events are ordered by user, then time; equal times keep the input order (the order of the file).
Sessions come from gaps: a user's session ends where the next event is more than ``session_gap``
after the previous one. They are numbered on the whole log before it is split, so a session may
run from the history into the test; the sequence-aware evaluation keeps its state across that
boundary. A validation split is carved from the history the same way: split the history again
with ``session_gap=None`` (keep its sessions).

Command line (writes ``history.tsv`` and ``test.tsv``, with ``--validation-last`` also
``valid_train.tsv`` and ``valid.tsv``)::

    python -m gru4rec_lib.splits ratings.tsv out/ --last 10 --session-gap 3600 --validation-last 10
"""
import argparse
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import sessiondata

logger = logging.getLogger(__name__)


def sessions_from_gaps(events, session_gap, user_key="UserId", time_key="Time", session_key="SessionId"):
    """Return a new frame sorted by user then time, with sessions cut at gaps longer than `session_gap`.

    Parameters
    ----------
    events : pandas.DataFrame
        Events with a user and a time column; other columns are kept. Not modified.
    session_gap : float
        A user's next event starts a new session when it comes more than this after the
        previous one (in the time column's unit, e.g. seconds).
    user_key, time_key, session_key : str
        Column names; ``session_key`` is written (replaced if present).

    Returns
    -------
    pandas.DataFrame
        The events (index kept) in (user, time) order, equal times in input order, with int64
        session ids ``0, 1, ...`` in that order (unique over users).

    Examples
    --------
    >>> events = pd.DataFrame({"UserId": [1, 1, 1], "ItemId": [4, 5, 6], "Time": [0, 10, 500]})
    >>> sessions_from_gaps(events, session_gap=60).SessionId.tolist()
    [0, 0, 1]
    """
    _check_gap(session_gap, allow_none=False)
    ordered = _ordered(events, user_key, time_key)
    user = ordered[user_key].to_numpy()
    time = ordered[time_key].to_numpy(dtype=np.float64)
    starts = np.ones(len(ordered), dtype=bool)
    starts[1:] = (user[1:] != user[:-1]) | (np.diff(time) > session_gap)
    ordered[session_key] = np.cumsum(starts).astype(np.int64) - 1
    return ordered


def split_user_histories(events, last=None, cut_time=None, session_gap=None, min_history=1,
                         user_key="UserId", time_key="Time", session_key="SessionId"):
    """Split each user's events into history and test; return new (history, test) frames.

    Parameters
    ----------
    events : pandas.DataFrame
        Events with user and time columns (and the session column if `session_gap` is None);
        other columns are kept. Not modified.
    last : int or None
        Each user's last `last` events are the test. Exactly one of `last` and `cut_time`.
    cut_time : float or None
        Events at or after this time are the test.
    session_gap : float or None
        Cut sessions at gaps longer than this (:func:`sessions_from_gaps`, on the whole log
        before splitting); None keeps the existing `session_key` column (e.g. to carve a
        validation split from a history).
    min_history : int, default 1
        Users need this many history events to get a test. With `last`, a user with fewer than
        ``last + min_history`` events puts them all in the history; with `cut_time`, a user with
        fewer than `min_history` events before the cut has their later events dropped.
    user_key, time_key, session_key : str
        Column names.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        History and test, each in (user, time) order with equal times in input order, the
        index of `events` kept.

    Examples
    --------
    >>> events = pd.DataFrame({"UserId": [1, 1, 1, 2], "ItemId": [4, 5, 6, 7], "Time": [0, 10, 500, 3]})
    >>> history, test = split_user_histories(events, last=1, session_gap=60)
    >>> history.ItemId.tolist(), test.ItemId.tolist(), test.SessionId.tolist()
    ([4, 5, 7], [6], [1])
    """
    if (last is None) == (cut_time is None):
        raise ValueError(f"pass exactly one of last (an event count) and cut_time (a time), "
                         f"got last={last!r}, cut_time={cut_time!r}")
    if last is not None and (not sessiondata.is_int(last) or last < 1):
        raise ValueError(f"last={last!r} is invalid: expected a positive int (test events per user)")
    if cut_time is not None and not (sessiondata.is_real(cut_time) and math.isfinite(cut_time)):
        raise ValueError(f"cut_time={cut_time!r} is invalid: expected a finite number in the time column's unit")
    if not sessiondata.is_int(min_history) or min_history < 0:
        raise ValueError(f"min_history={min_history!r} is invalid: expected an int >= 0")
    _check_gap(session_gap, allow_none=True)
    if session_gap is None:
        if session_key not in events.columns:
            raise ValueError(f"session_gap is None but the column {session_key!r} is missing: "
                             "pass session_gap= to cut sessions from time gaps")
        ordered = _ordered(events, user_key, time_key)
    else:
        ordered = sessions_from_gaps(events, session_gap, user_key, time_key, session_key)
    is_test, keep = (_last_n(ordered, user_key, last, min_history) if last is not None else
                     _after_cut(ordered, user_key, time_key, cut_time, min_history))
    history, test = ordered[keep & ~is_test], ordered[keep & is_test]
    logger.info("split %d events of %d users: %d history, %d test (%d users), %d dropped", len(ordered),
                ordered[user_key].nunique(), len(history), len(test), test[user_key].nunique(),
                int((~keep).sum()))
    return history, test


def _last_n(ordered, user_key, last, min_history):
    """(is_test, keep): the last `last` events of users with at least last + min_history events."""
    user = ordered[user_key]
    size = user.groupby(user, sort=False).transform("size").to_numpy()
    from_end = size - 1 - user.groupby(user, sort=False).cumcount().to_numpy()
    is_test = (from_end < last) & (size >= last + min_history)
    return is_test, np.ones(len(ordered), dtype=bool)


def _after_cut(ordered, user_key, time_key, cut_time, min_history):
    """(is_test, keep): events from `cut_time` on; a user short of history keeps only earlier events."""
    after = ordered[time_key].to_numpy(dtype=np.float64) >= cut_time
    before = pd.Series(~after, index=ordered.index).groupby(ordered[user_key], sort=False).transform("sum")
    enough = before.to_numpy() >= min_history
    return after, ~after | enough


def _ordered(events, user_key, time_key):
    """A (user, time)-sorted copy after checking the columns; equal times keep the input order."""
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a pandas DataFrame, got {type(events).__name__}")
    for key, name in ((user_key, "user_key"), (time_key, "time_key")):
        if key not in events.columns:
            raise KeyError(f"column {key!r} not found; pass {name}= (columns: {', '.join(map(str, events.columns))})")
    for key in (user_key, time_key):
        if events[key].isna().any():
            raise ValueError(f"column {key!r} has {int(events[key].isna().sum())} missing values; drop or fill them")
    time = events[time_key]
    if not pd.api.types.is_numeric_dtype(time) or pd.api.types.is_bool_dtype(time):
        raise ValueError(f"column {time_key!r} has dtype {time.dtype}; time must be numeric (e.g. unix seconds)")
    if not np.isfinite(time.to_numpy(dtype=np.float64)).all():
        raise ValueError(f"column {time_key!r} has infinite values")
    codes = pd.factorize(events[user_key], sort=True)[0]
    order = np.lexsort((time.to_numpy(dtype=np.float64), codes))  # stable: ties keep input order
    return events.iloc[order].copy(deep=True)


def _check_gap(session_gap, allow_none):
    if session_gap is None and allow_none:
        return
    if not sessiondata.is_real(session_gap) or not session_gap > 0 or not math.isfinite(session_gap):
        raise ValueError(f"session_gap={session_gap!r} is invalid: expected a positive finite number "
                         "(the longest pause inside a session, in the time column's unit)")


# ---------------------------------------------------------------- command line
def read_table(path, keep_text_except=None):
    """All columns of an events file: .tsv/.txt (tab-separated), .csv, .parquet, .pkl/.pickle (trusted
    only). With `keep_text_except` (a column name), a text file's other columns are read as text,
    so that what is written out again is what was read ('007' stays '007'; `sessiondata.read_text`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in sessiondata._READERS:
        raise ValueError(f"unknown file suffix {suffix!r} for {path}; supported: {', '.join(sessiondata._READERS)}")
    if not path.is_file():
        raise FileNotFoundError(f"events file not found: {path}")
    if suffix in (".tsv", ".txt", ".csv"):
        sep = "," if suffix == ".csv" else "\t"
        if keep_text_except is None:
            return pd.read_csv(path, sep=sep)
        names = pd.read_csv(path, sep=sep, nrows=0).columns
        return sessiondata.read_text(path, sep, [name for name in names if name != keep_text_except])
    return pd.read_parquet(path) if suffix == ".parquet" else pd.read_pickle(path)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="gru4rec-split", description="Split user histories into history and test (and validation) files.")
    parser.add_argument("events", metavar="EVENTS_PATH", help="events file (.tsv, .txt, .csv, .parquet, .pkl)")
    parser.add_argument("out", metavar="OUT_DIR", help="folder for history.tsv, test.tsv (made if missing)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--last", type=int, metavar="N", help="each user's last N events are the test")
    which.add_argument("--cut-time", type=float, metavar="T", help="events at or after time T are the test")
    parser.add_argument("--session-gap", type=float, required=True, metavar="SECONDS",
                        help="a pause longer than this starts a new session")
    parser.add_argument("--min-history", type=int, default=1, metavar="K",
                        help="history events a user needs to get a test (default 1)")
    valid = parser.add_mutually_exclusive_group()
    valid.add_argument("--validation-last", type=int, metavar="N",
                       help="also split the history: valid_train.tsv, valid.tsv (last N of each user)")
    valid.add_argument("--validation-cut-time", type=float, metavar="T",
                       help="also split the history at time T: valid_train.tsv, valid.tsv")
    parser.add_argument("--user-key", default="UserId")
    parser.add_argument("--time-key", default="Time")
    parser.add_argument("--session-key", default="SessionId", help="the session column written")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv=None):
    """Run the command line; returns the written paths."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(message)s")
    keys = dict(user_key=args.user_key, time_key=args.time_key, session_key=args.session_key)
    try:
        events = read_table(args.events, keep_text_except=args.time_key)
        parts = dict(zip(("history", "test"), split_user_histories(
            events, last=args.last, cut_time=args.cut_time, session_gap=args.session_gap,
            min_history=args.min_history, **keys)))
        if args.validation_last is not None or args.validation_cut_time is not None:
            parts.update(zip(("valid_train", "valid"), split_user_histories(
                parts["history"], last=args.validation_last, cut_time=args.validation_cut_time,
                min_history=args.min_history, **keys)))
    except (ValueError, KeyError, TypeError, FileNotFoundError) as error:
        parser.exit(1, f"gru4rec-split: error: {error}\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in parts.items():
        path = out / f"{name}.tsv"
        frame.to_csv(path, sep="\t", index=False)
        print(f"{name}: {len(frame)} events, {frame[args.user_key].nunique()} users, file: {path}")
        written.append(path)
    return written


if __name__ == "__main__":
    main()
