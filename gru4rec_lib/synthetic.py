"""Synthetic sessions with planted next-item structure and popularity skew, for tests and demos.

The planted structure (the same for every function here):

- Item ``i`` (index 0..n_items-1) has popularity weight ``(i + 1) ** -popularity_exponent``
  (Zipf-like: item 0 is the most popular).
- Each item has ``n_successors`` planted successors, distinct from the item, drawn without
  replacement with probability proportional to popularity, fixed by ``seed``
  (:func:`planted_successors`). Successor ``k`` (0-based) is chosen with probability
  proportional to ``2 ** -k``, so the first one is the most likely follower.
- A session's first item is a popularity draw; each next item is one of the current item's
  successors with probability ``1 - noise``, else a popularity draw.

With small ``noise`` a model that learns transitions beats a popularity ranking by a wide
margin: the best possible Recall@n_successors is about ``1 - noise``, while popularity only
hits the popular items.
"""
import numpy as np
import pandas as pd


def _check(condition, message):
    if not condition:
        raise ValueError(message)


def _popularity(n_items, popularity_exponent):
    weights = np.arange(1, n_items + 1, dtype=np.float64) ** -float(popularity_exponent)
    return weights / weights.sum()


def _item_ids(indices, string_ids):
    if string_ids:
        return np.array([f"item_{i}" for i in np.ravel(indices)], dtype=object).reshape(
            np.shape(indices))
    return np.asarray(indices, dtype=np.int64)


def _first_new(draws):
    """Mask of the entries that are the first occurrence of their value within their row."""
    by_value = np.argsort(draws, axis=1, kind="stable")
    ranked = np.take_along_axis(draws, by_value, axis=1)
    first = np.ones_like(draws, dtype=bool)
    first[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    mask = np.empty_like(first)
    np.put_along_axis(mask, by_value, first, axis=1)
    return mask


def successor_probabilities(n_successors=3):
    """Return the probability of each planted successor given a successor step: ``2**-k``, normed.

    Examples
    --------
    >>> successor_probabilities(3).round(3).tolist()
    [0.571, 0.286, 0.143]
    """
    weights = 0.5 ** np.arange(n_successors)
    return weights / weights.sum()


def planted_successors(n_items=200, n_successors=3, popularity_exponent=1.0, seed=0,
                       string_ids=False):
    """Return the planted successor table of :func:`generate_sessions` with the same arguments.

    Returns
    -------
    numpy.ndarray
        ``(n_items, n_successors)``: row ``i`` holds the successors of item ``i`` (item ids as
        in the generated frame: ints, or ``"item_<i>"`` strings), most likely first.

    Examples
    --------
    >>> table = planted_successors(n_items=10, n_successors=2)
    >>> table.shape, bool((table != np.arange(10)[:, None]).all())
    ((10, 2), True)
    """
    _check(n_items >= 2, f"n_items must be at least 2, got {n_items}")
    _check(1 <= n_successors < n_items,
           f"n_successors must be in 1..n_items-1 = {n_items - 1}, got {n_successors}")
    _check(popularity_exponent >= 0, f"popularity_exponent must be >= 0, got {popularity_exponent}")
    rng = np.random.default_rng(seed).spawn(2)[0]  # stream 0: the table; 1: the sessions
    popularity = _popularity(n_items, popularity_exponent)
    table = np.empty((n_items, n_successors), dtype=np.int64)
    pending, draws = np.arange(n_items), np.empty((n_items, 0), dtype=np.int64)
    while len(pending):
        # Popularity draws with replacement, skipping repeats and the item itself, are exactly
        # a popularity-weighted draw without replacement; rows short of n_successors draw more.
        more = rng.choice(n_items, size=(len(pending), 4 * n_successors + 8), p=popularity)
        draws = np.concatenate([draws, more], axis=1)
        keep = _first_new(draws) & (draws != pending[:, None])
        keep &= np.cumsum(keep, axis=1) <= n_successors
        done = keep.sum(axis=1) == n_successors
        table[pending[done]] = draws[done][keep[done]].reshape(-1, n_successors)
        pending, draws = pending[~done], draws[~done]
    return _item_ids(table, string_ids)


def _check_session_args(n_sessions, mean_length, noise):
    _check(n_sessions >= 1, f"n_sessions must be at least 1, got {n_sessions}")
    _check(mean_length >= 1, f"mean_length must be at least 1, got {mean_length}")
    _check(0 <= noise <= 1, f"noise must be in [0, 1], got {noise}")


def _walk(rng, lengths, successors, popularity, noise):
    """Item indices of all sessions, session after session, by the planted Markov chain."""
    n_items, n_successors = successors.shape
    first = np.cumsum(lengths) - lengths  # flat index of each session's first event
    items = np.empty(lengths.sum(), dtype=np.int64)
    items[first] = rng.choice(n_items, size=len(lengths), p=popularity)
    succ_p = successor_probabilities(n_successors)
    for t in range(1, lengths.max()):  # all sessions advance together, one position at a time
        event = first[lengths > t] + t
        follow = successors[items[event - 1], rng.choice(n_successors, len(event), p=succ_p)]
        jump = rng.choice(n_items, size=len(event), p=popularity)
        items[event] = np.where(rng.random(len(event)) < noise, jump, follow)
    return items


def generate_sessions(n_sessions=2000, n_items=200, mean_length=6.0, n_successors=3, noise=0.1,
                      popularity_exponent=1.0, string_ids=False, seed=0):
    """Generate session events with the planted structure described in the module docstring.

    Parameters
    ----------
    n_sessions, n_items : int
        Number of sessions and of items.
    mean_length : float
        Mean session length (>= 1). Lengths are geometric on 1, 2, ...: a share
        ``1 / mean_length`` of sessions has length 1.
    n_successors : int
        Planted successors per item; the table is :func:`planted_successors`.
    noise : float
        Probability that a next item is a popularity draw instead of a successor.
    popularity_exponent : float
        Zipf exponent of item popularity (0: uniform).
    string_ids : bool
        Item ids ``"item_<i>"`` instead of ints ``i``.
    seed : int
        Seeds ``np.random.default_rng``; the same seed gives an identical frame.

    Returns
    -------
    pandas.DataFrame
        Columns ``SessionId`` (int64, 0..n_sessions-1), ``ItemId``, ``Time`` (float seconds;
        session starts increase with the session id, times increase within a session), rows
        sorted by session then time.

    Examples
    --------
    >>> events = generate_sessions(n_sessions=100, n_items=20, seed=1)
    >>> list(events.columns), events["SessionId"].nunique()
    (['SessionId', 'ItemId', 'Time'], 100)
    """
    _check_session_args(n_sessions, mean_length, noise)
    successors = planted_successors(n_items, n_successors, popularity_exponent, seed)
    rng = np.random.default_rng(seed).spawn(2)[1]
    lengths = rng.geometric(1.0 / mean_length, size=n_sessions)
    items = _walk(rng, lengths, successors, _popularity(n_items, popularity_exponent), noise)
    session = np.repeat(np.arange(n_sessions, dtype=np.int64), lengths)
    return pd.DataFrame({"SessionId": session, "ItemId": _item_ids(items, string_ids),
                         "Time": _times(rng, lengths)})


def _times(rng, lengths):
    """Float seconds: session starts 1+Exp(60) s apart, events 1+Exp(30) s apart within one."""
    session_start = np.cumsum(1.0 + rng.exponential(60.0, size=len(lengths)))
    first_event = np.cumsum(lengths) - lengths
    gaps = 1.0 + rng.exponential(30.0, size=lengths.sum())
    gaps[first_event] = 0.0
    elapsed = np.cumsum(gaps)  # restarts at each session: subtract the value at its first event
    return np.repeat(session_start, lengths) + elapsed - np.repeat(elapsed[first_event], lengths)


def split_by_time(events, test_fraction=0.1, session_key="SessionId", time_key="Time"):
    """Split whole sessions by start time: the last ``test_fraction`` of sessions form the test.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        New ``(train, test)`` frames in the input row order; ``events`` is not modified.
        No session is split; every test session starts no earlier than every train session.

    Examples
    --------
    >>> train, test = split_by_time(generate_sessions(n_sessions=50), test_fraction=0.2)
    >>> train["SessionId"].nunique(), test["SessionId"].nunique()
    (40, 10)
    """
    _check(0 < test_fraction < 1, f"test_fraction must be in (0, 1), got {test_fraction}")
    for key, name in ((session_key, "session_key"), (time_key, "time_key")):
        if key not in events.columns:
            raise KeyError(f"column {key!r} not found; pass {name}= "
                           f"(columns: {', '.join(map(str, events.columns))})")
    starts = events.groupby(session_key, sort=True)[time_key].min()
    n_test = max(1, int(round(test_fraction * len(starts))))
    _check(n_test < len(starts), f"cannot split {len(starts)} sessions: train would be empty")
    by_start = starts.index[np.argsort(starts.to_numpy(), kind="stable")]
    is_test = events[session_key].isin(by_start[len(starts) - n_test:]).to_numpy()
    return events[~is_test].copy(), events[is_test].copy()


def generate_user_histories(n_users=2000, n_items=500, sessions_per_user=5, mean_length=5.0, n_topics=20,
                            topics_per_user=2, taste=0.4, noise=0.1, n_successors=3, popularity_exponent=1.0,
                            seed=0):
    """Users with a lasting taste and several sessions each, for the sequence-aware mode.

    Item ``i`` belongs to topic ``i % n_topics``; each user likes ``topics_per_user`` topics. A
    session's first item is a draw from the user's topics; each next item is, with probability
    ``taste``, a draw from the user's topics, else it follows the planted chain of
    :func:`generate_sessions` (a successor, or with probability ``noise`` a popularity draw).
    Draws inside topics are popularity-weighted. The taste is what a model can learn about a user
    from earlier sessions; the chain is what a session model learns.

    Returns
    -------
    pandas.DataFrame
        Columns ``UserId``, ``SessionId`` (numbered per user in time order, unique overall),
        ``ItemId`` (int), ``Time`` (float; a user's sessions follow each other, users interleave).

    Examples
    --------
    >>> events = generate_user_histories(n_users=20, n_items=40, seed=1)
    >>> list(events.columns), int(events.groupby("UserId").SessionId.nunique().min())
    (['UserId', 'SessionId', 'ItemId', 'Time'], 5)
    """
    _check(n_users >= 1 and sessions_per_user >= 1, "n_users and sessions_per_user must be at least 1")
    _check(1 <= topics_per_user <= n_topics <= n_items, "need 1 <= topics_per_user <= n_topics <= n_items")
    _check(0 <= taste <= 1, f"taste must be in [0, 1], got {taste}")
    _check_session_args(n_users * sessions_per_user, mean_length, noise)
    successors = planted_successors(n_items, n_successors, popularity_exponent, seed)
    rng = np.random.default_rng(seed).spawn(3)[2]
    popularity = _popularity(n_items, popularity_exponent)
    topics = np.stack([rng.choice(n_topics, topics_per_user, replace=False) for _ in range(n_users)])
    n_sessions = n_users * sessions_per_user
    lengths = rng.geometric(1.0 / mean_length, size=n_sessions)
    user = np.repeat(np.arange(n_users), sessions_per_user)
    event_user = np.repeat(user, lengths)
    liked = _topic_draws(rng, topics[event_user], n_topics, popularity)
    first = np.cumsum(lengths) - lengths
    use_taste = rng.random(len(liked)) < taste
    use_taste[first] = True
    items = np.empty(len(liked), dtype=np.int64)
    for t in range(lengths.max()):  # all sessions advance together; the chain follows the item chosen
        event = first[lengths > t] + t
        if t:
            prev = items[event - 1]
            follow = successors[prev, rng.choice(n_successors, len(event), p=successor_probabilities(n_successors))]
            jump = rng.choice(n_items, size=len(event), p=popularity)
            items[event] = np.where(rng.random(len(event)) < noise, jump, follow)
        items[event] = np.where(use_taste[event], liked[event], items[event])
    # a user's sessions in order; users' histories interleave over time
    session_start = np.repeat(rng.uniform(0, 1e6, n_users), sessions_per_user) + np.tile(
        np.arange(sessions_per_user) * 1e5, n_users)
    within = np.arange(len(items)) - np.repeat(first, lengths)
    return pd.DataFrame({"UserId": event_user.astype(np.int64),
                         "SessionId": np.repeat(np.arange(n_sessions, dtype=np.int64), lengths),
                         "ItemId": items.astype(np.int64),
                         "Time": np.repeat(session_start, lengths) + within * 10.0})


def _topic_draws(rng, user_topics, n_topics, popularity):
    """One popularity-weighted item per row from a uniformly chosen topic of the row's user."""
    n_items = len(popularity)
    topic = user_topics[np.arange(len(user_topics)), rng.integers(user_topics.shape[1], size=len(user_topics))]
    per_topic = [np.arange(k, n_items, n_topics) for k in range(n_topics)]
    out = np.empty(len(topic), dtype=np.int64)
    for k in np.unique(topic):
        members = per_topic[k]
        rows = np.flatnonzero(topic == k)
        p = popularity[members] / popularity[members].sum()
        out[rows] = rng.choice(members, size=len(rows), p=p)
    return out


def split_last_sessions(events, user_key="UserId", session_key="SessionId", time_key="Time"):
    """Each user's last session (by start time) is the test; returns new (history, test) frames.

    Examples
    --------
    >>> history, test = split_last_sessions(generate_user_histories(n_users=10, n_items=40))
    >>> int(test.groupby("UserId").SessionId.nunique().max())
    1
    """
    for key, name in ((user_key, "user_key"), (session_key, "session_key"), (time_key, "time_key")):
        if key not in events.columns:
            raise KeyError(f"column {key!r} not found; pass {name}= (columns: {', '.join(map(str, events.columns))})")
    starts = events.groupby([user_key, session_key], sort=False)[time_key].min().reset_index()
    last = starts.sort_values(time_key, kind="stable").groupby(user_key).tail(1)[session_key]
    is_test = events[session_key].isin(last).to_numpy()
    return events[~is_test].copy(), events[is_test].copy()
