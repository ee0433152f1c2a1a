"""Tests for sessiondata: validation, item map, sorted sessions and the schedule vs brute force."""
import copy
import re

import numpy as np
import pandas as pd
import pytest

from gru4rec_lib.sessiondata import (Chunk, ItemMap, SessionData, load_events, n_chunks, schedule_definition,
                                    session_parallel_schedule)


def make_data(lengths, n_items=7, seed=0):
    """SessionData with the given session lengths and random items."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return SessionData(rng.integers(0, n_items, offsets[-1]), offsets,
                       np.arange(len(lengths)) * 10, rng.random(len(lengths)))


def brute_force(data, order, batch_size):
    """The library's plain-loop definition of the schedule, as a dict of (T, B) arrays."""
    return schedule_definition(data, order, batch_size)._asdict()


def run_schedule(data, order, batch_size, k):
    chunks = list(session_parallel_schedule(data, order, batch_size, k))
    assert len(chunks) == n_chunks(data, order, batch_size, k)
    for chunk in chunks:
        assert isinstance(chunk, Chunk)
        for name, dtype in zip(Chunk._fields, [np.int32, np.int32, bool, bool, np.int64, np.int32]):
            assert getattr(chunk, name).shape == (k, batch_size)
            assert getattr(chunk, name).dtype == dtype, name
    if not chunks:
        return {name: np.zeros((0, batch_size)) for name in Chunk._fields}
    return {name: np.concatenate([getattr(c, name) for c in chunks]) for name in Chunk._fields}


CASES = [
    ([2, 2, 2, 2, 2], 2),  # all length 2: a slot changes session every step
    ([50, 2, 3, 2, 4, 2, 2, 3, 2], 3),  # one very long session
    ([1, 3, 1, 1, 2, 5, 1, 4, 1], 2),  # length-1 sessions mixed in
    ([3, 1, 5], 8),  # fewer usable sessions than slots
    ([1, 1, 1], 2),  # no usable session: empty schedule
    ([6, 6, 6, 6], 4),  # all slots free up at the same step, then drain
    ([7], 1),
]


@pytest.mark.parametrize("lengths,batch_size", CASES)
@pytest.mark.parametrize("k", [1, 2, 3, 7, 1000])
def test_schedule_matches_brute_force(lengths, batch_size, k):
    data = make_data(lengths)
    for order in (data.session_order(), data.session_order(time_sort=False),
                  data.session_order(rng=np.random.default_rng(1))):
        expected = brute_force(data, order, batch_size)
        got = run_schedule(data, order, batch_size, k)
        n = len(expected["active"])
        assert len(got["active"]) == -(-n // k) * k
        for name in Chunk._fields:
            np.testing.assert_array_equal(got[name][:n], expected[name], err_msg=name)
        padding = {name: got[name][n:] for name in Chunk._fields}
        assert not padding["active"].any() and padding["reset"].all()
        assert (padding["session"] == -1).all() and (padding["position"] == -1).all()
        assert not padding["inputs"].any() and not padding["targets"].any()


def test_schedule_random_lengths_vs_brute_force():
    rng = np.random.default_rng(5)
    lengths = rng.geometric(0.3, size=120)
    data = make_data(lengths, n_items=30)
    order = data.session_order(rng=rng)
    for batch_size, k in [(1, 5), (4, 1), (5, 13), (16, 64)]:
        expected = brute_force(data, order, batch_size)
        got = run_schedule(data, order, batch_size, k)
        for name in Chunk._fields:
            np.testing.assert_array_equal(got[name][:len(expected[name])], expected[name])


def test_schedule_definition_by_hand_and_with_breaks():
    """Sessions 0 (3 events), 1 (1 event, skipped), 2 (2 events) on 2 slots; a break in session 0."""
    data = SessionData(np.array([4, 5, 6, 9, 7, 8]), np.array([0, 3, 4, 6]), np.array([10, 11, 12]),
                       np.zeros(3), breaks=np.array([False, True, False, False, False, False]))
    chunk = schedule_definition(data, [0, 1, 2], 2)
    np.testing.assert_array_equal(chunk.inputs, [[4, 7], [5, 0]])
    np.testing.assert_array_equal(chunk.targets, [[5, 8], [6, 0]])
    np.testing.assert_array_equal(chunk.reset, [[True, True], [True, True]])  # the break resets step 2
    np.testing.assert_array_equal(chunk.active, [[True, True], [True, False]])
    np.testing.assert_array_equal(chunk.session, [[0, 2], [0, -1]])
    got = run_schedule(data, [0, 1, 2], 2, 3)
    for name in Chunk._fields:
        np.testing.assert_array_equal(got[name][:2], getattr(chunk, name), err_msg=name)
    assert schedule_definition(data, [1], 2).active.shape == (0, 2)


def test_schedule_invariants():
    rng = np.random.default_rng(2)
    data = make_data(rng.geometric(0.2, size=400), n_items=50)
    got = run_schedule(data, data.session_order(), 7, 10)
    active = got["active"]
    assert active.sum() == data.n_steps
    pairs = set(zip(got["session"][active].tolist(), got["position"][active].tolist()))
    assert len(pairs) == data.n_steps
    lengths = np.diff(data.offsets)
    assert pairs == {(s, p) for s in range(data.n_sessions) for p in range(lengths[s] - 1)}
    event = data.offsets[got["session"][active]] + got["position"][active]
    np.testing.assert_array_equal(got["inputs"][active], data.item_idx[event])
    np.testing.assert_array_equal(got["targets"][active], data.item_idx[event + 1])
    np.testing.assert_array_equal(got["reset"], (got["position"] == 0) | ~active)
    assert got["active"].reshape(-1, 10, 7).any(axis=(1, 2)).all()  # no chunk fully inactive


def test_schedule_follows_order_and_skips_short():
    data = make_data([3, 1, 2, 4])
    got = run_schedule(data, np.array([3, 1, 0, 2]), 1, 100)
    sessions = got["session"][got["active"]]
    assert sessions.tolist() == [3, 3, 3, 0, 0, 2]
    assert got["reset"][got["active"]].tolist() == [True, False, False, True, False, True]
    assert list(session_parallel_schedule(data, [], 2, 3)) == [] and n_chunks(data, [], 2, 3) == 0


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer"),
    ({"steps_per_chunk": 0}, "steps_per_chunk must be a positive integer, got 0"),
    ({"order": np.array([0, 5])}, r"outside 0\.\.2"),
    ({"order": np.array([0.0, 1.0])}, "order must be a 1-d integer array"),
])
def test_schedule_bad_arguments_raise_at_call(kwargs, match):
    data = make_data([2, 3, 2])
    args = {"data": data, "order": np.arange(3), "batch_size": 2, "steps_per_chunk": 4} | kwargs
    with pytest.raises(ValueError, match=match):
        session_parallel_schedule(**args)  # eagerly, before the first chunk is requested
    with pytest.raises(ValueError, match=match):
        n_chunks(**args)


# ---------------------------------------------------------------- load_events
def events_frame():
    return pd.DataFrame({"SessionId": [1, 1, 2, 2, 2], "ItemId": [10, 11, 10, 12, 11],
                         "Time": [0.0, 1.0, 5.0, 6.0, 7.0], "Extra": list("abcde")})


def test_load_events_returns_new_frame_and_keeps_caller_frame():
    df = events_frame()
    before = copy.deepcopy(df)
    events = load_events(df)
    assert list(events.columns) == ["SessionId", "ItemId", "Time"]
    pd.testing.assert_frame_equal(events, before[["SessionId", "ItemId", "Time"]])
    events.loc[0, "ItemId"] = 99
    events["Time"] *= 2
    pd.testing.assert_frame_equal(df, before)


def test_load_events_custom_keys():
    df = events_frame().rename(columns={"SessionId": "sid", "ItemId": "item", "Time": "ts"})
    events = load_events(df, session_key="sid", item_key="item", time_key="ts")
    assert list(events.columns) == ["sid", "item", "ts"]
    assert events["item"].tolist() == [10, 11, 10, 12, 11]


def test_load_events_missing_column_names_keyword_and_columns():
    df = events_frame().drop(columns="Extra").rename(columns={"ItemId": "item"})
    with pytest.raises(KeyError, match=re.escape(
            "column 'ItemId' not found; pass item_key= (columns: SessionId, item, Time)")):
        load_events(df)
    with pytest.raises(KeyError, match="pass time_key="):
        load_events(df, item_key="item", time_key="when")


@pytest.mark.parametrize("column,values,match", [
    ("ItemId", [10, None, 10, np.nan, 11], "column 'ItemId' has 2 missing values .*row label 'b'"),
    ("SessionId", [1, 1, None, 2, 2], "column 'SessionId' has 1 missing values .*row label 'c'"),
    ("Time", [0.0, 1.0, 5.0, 6.0, np.nan], "column 'Time' has 1 missing values .*row label 'e'"),
])
def test_load_events_missing_values(column, values, match):
    df = events_frame().set_axis(list("abcde"))
    df[column] = values
    with pytest.raises(ValueError, match=match):
        load_events(df)


def test_load_events_missing_datetime():
    df = events_frame()
    df["Time"] = pd.to_datetime(["2020-01-01", None, "2020-01-02", "2020-01-03", "2020-01-04"])
    with pytest.raises(ValueError, match="column 'Time' has 1 missing values .*row label 1"):
        load_events(df)


@pytest.mark.parametrize("values,match", [
    (["0", "1", "5", "6", "7"], "column 'Time' has dtype .*must be numeric or datetime64"),
    (np.array([0, 1, 5, 6, 7], dtype=object), "column 'Time' has dtype object"),
    ([True, False, True, True, False], "column 'Time' has dtype bool"),
    ([0.0, np.inf, 1.0, 2.0, 3.0], "column 'Time' has 1 infinite values, first at row label 1"),
])
def test_load_events_bad_time(values, match):
    df = events_frame()
    df["Time"] = values
    with pytest.raises(ValueError, match=match):
        load_events(df)


def test_load_events_empty_and_other_errors(tmp_path):
    with pytest.raises(ValueError, match="no events: the data has 0 rows"):
        load_events(events_frame().iloc[:0])
    with pytest.raises(ValueError, match="must be distinct"):
        load_events(events_frame(), item_key="SessionId")
    with pytest.raises(ValueError, match="column 'ItemId' appears 2 times"):
        load_events(pd.concat([events_frame(), events_frame()[["ItemId"]]], axis=1))
    with pytest.raises(TypeError, match="data must be a DataFrame or a file path, got int"):
        load_events(42)
    with pytest.raises(ValueError, match=r"unknown file suffix '\.json'.*supported: \.tsv"):
        load_events(tmp_path / "events.json")
    with pytest.raises(FileNotFoundError, match="events file not found: .*nope.tsv"):
        load_events(tmp_path / "nope.tsv")


@pytest.mark.parametrize("suffix", [".tsv", ".txt", ".csv", ".parquet", ".pkl"])
def test_load_events_file_round_trip(tmp_path, suffix):
    df = events_frame()
    df["ItemId"] = ["a", "b", "a", "c", "b"]
    path = tmp_path / f"events{suffix}"
    if suffix == ".parquet":
        df.to_parquet(path)
    elif suffix == ".pkl":
        df.to_pickle(path)
    else:
        df.to_csv(path, sep="," if suffix == ".csv" else "\t", index=False)
    events = load_events(str(path), allow_pickle=suffix == ".pkl")
    assert list(events.columns) == ["SessionId", "ItemId", "Time"]
    assert events["ItemId"].tolist() == ["a", "b", "a", "c", "b"]
    assert events["SessionId"].tolist() == [1, 1, 2, 2, 2]
    np.testing.assert_array_equal(events["Time"].to_numpy(), [0.0, 1.0, 5.0, 6.0, 7.0])


@pytest.mark.parametrize("suffix", [".tsv", ".csv"])
def test_ids_in_text_files_that_read_as_one_number_stay_apart(tmp_path, suffix):
    """'007', '7', '07' (and '+7', ' 7', '7.0') are different ids: parsed as numbers they would be one."""
    path = tmp_path / f"events{suffix}"
    sep = "," if suffix == ".csv" else "\t"
    items = ["007", "7", "0007", "07", "+7", "7.0", " 7", "8"]
    lines = ["SessionId,ItemId,Time".replace(",", sep)] + [f"{'0' + str(i // 2)}{sep}{item}{sep}{i}"
                                                         for i, item in enumerate(items)]
    path.write_text("\n".join(lines) + "\n")
    events = load_events(path)
    assert events["ItemId"].tolist() == items
    assert events["SessionId"].tolist() == ["00", "00", "01", "01", "02", "02", "03", "03"]


@pytest.mark.parametrize("items", [["1", "1.5", "2", "1.0"], ["True", "true", "False", "1"], ["7", "abc", "8", "x"]])
def test_ids_that_pandas_would_parse_as_floats_bools_or_a_mix_stay_text(tmp_path, items):
    path = tmp_path / "events.tsv"
    path.write_text("SessionId\tItemId\tTime\n" + "".join(f"{i // 2}\t{item}\t{i}\n" for i, item in enumerate(items)))
    assert load_events(path)["ItemId"].tolist() == items


def test_ids_in_text_files_written_plainly_are_int64(tmp_path):
    path = tmp_path / "events.tsv"
    path.write_text("SessionId\tItemId\tTime\n1\t-5\t0\n1\t0\t1\n12\t9223372036854775807\t2\n12\t10\t3\n")
    events = load_events(path)
    assert events["ItemId"].dtype == np.int64 and events["SessionId"].dtype == np.int64
    assert events["ItemId"].tolist() == [-5, 0, 2**63 - 1, 10] and events["SessionId"].tolist() == [1, 1, 12, 12]


@pytest.mark.parametrize("unit,tz", [("ns", None), ("s", None), ("us", "UTC")])
def test_load_events_datetime_to_int64_ns(unit, tz):
    df = events_frame()
    df["Time"] = pd.to_datetime([0, 1, 5, 6, 7], unit="s", utc=tz is not None).as_unit(unit)
    events = load_events(df)
    assert events["Time"].dtype == np.int64
    assert events["Time"].tolist() == [0, 10**9, 5 * 10**9, 6 * 10**9, 7 * 10**9]
    assert pd.api.types.is_datetime64_any_dtype(df["Time"])  # caller's column untouched


# ---------------------------------------------------------------- ItemMap
def test_item_map_int_ids():
    source = np.array([5, 3, 9])
    item_map = ItemMap(source)
    assert len(item_map) == 3 and item_map.ids.dtype == np.int64
    np.testing.assert_array_equal(item_map.indices([9, 5, 4, 3]), [2, 0, -1, 1])
    assert item_map.indices([9, 4], missing=7).tolist() == [2, 7]
    assert item_map.indices([3]).dtype == np.int32
    assert item_map.indices(["5"]).tolist() == [-1]
    with pytest.raises(ValueError):
        item_map.ids[0] = 1
    source[0] = 1  # the map owns a copy; the caller's array stays writeable
    assert item_map.ids[0] == 5


def test_item_map_string_ids_and_from_events():
    column = pd.Series(["b", "a", "b", "c", "a"])
    item_map = ItemMap.from_events(column)
    assert item_map.ids.dtype == object and item_map.ids.tolist() == ["b", "a", "c"]
    assert item_map.indices(pd.Series(["c", "zz", "b"])).tolist() == [2, -1, 0]
    assert item_map.indices(np.array(["a"])).tolist() == [1]
    assert item_map.indices([1]).tolist() == [-1]
    assert ItemMap.from_events(pd.Series([7, 3, 7])).ids.tolist() == [7, 3]


def test_item_map_extended():
    item_map = ItemMap(["x", "y"])
    bigger = item_map.extended(["z", "y", "w", "z"])
    assert bigger.ids.tolist() == ["x", "y", "z", "w"]
    assert item_map.ids.tolist() == ["x", "y"]  # the original is unchanged
    assert bigger.indices(["x", "y", "w"]).tolist() == [0, 1, 3]
    assert item_map.extended(["x"]).ids.tolist() == ["x", "y"]
    from_empty = ItemMap().extended([4, 2, 4])
    assert from_empty.ids.tolist() == [4, 2] and from_empty.ids.dtype == np.int64
    assert len(ItemMap()) == 0 and ItemMap().indices([1, 2]).tolist() == [-1, -1]


def test_item_map_mixed_ids_stay_exact():
    mixed = ItemMap([1, "1", "a"])  # np.array would turn the int 1 into the string "1"
    assert mixed.ids.dtype == object and mixed.ids.tolist() == [1, "1", "a"]
    assert mixed.indices(["1", 1, "b"]).tolist() == [1, 0, -1]
    grown = ItemMap([3, 4]).extended(["x", 4])
    assert grown.ids.tolist() == [3, 4, "x"] and grown.indices([4, "x", "3"]).tolist() == [1, 2, -1]
    assert ItemMap([3]).extended(np.array([5], dtype=np.int32)).ids.dtype == np.int64


def test_item_map_rejects_duplicates():
    with pytest.raises(ValueError, match=r"item ids must be unique; duplicated: \['a'\]"):
        ItemMap(["a", "b", "a"])
    with pytest.raises(ValueError, match="one-dimensional"):
        ItemMap([[1, 2]])


# ---------------------------------------------------------------- SessionData
def test_session_data_sorts_stably():
    df = pd.DataFrame({"SessionId": ["s2", "s1", "s2", "s1", "s2", "s3"],
                       "ItemId": [3, 1, 4, 2, 5, 6],
                       "Time": [10, 2, 9, 2, 10, 0]})
    before = df.copy(deep=True)
    events = load_events(df)
    data = SessionData.from_events(events, ItemMap([1, 2, 3, 4, 5, 6]))
    pd.testing.assert_frame_equal(df, before)
    assert data.session_ids.tolist() == ["s1", "s2", "s3"]
    assert data.offsets.tolist() == [0, 2, 5, 6] and data.offsets.dtype == np.int64
    # s1: a time tie keeps input order (1 then 2); s2: 4 at t=9, then the tie 3, 5 in input order
    assert data.item_idx.tolist() == [0, 1, 3, 2, 4, 5] and data.item_idx.dtype == np.int32
    assert data.start_time.tolist() == [2.0, 9.0, 0.0] and data.start_time.dtype == np.float64
    assert (data.n_events, data.n_sessions, data.n_steps, data.n_dropped) == (6, 3, 3, 0)


def test_session_data_unknown_items():
    df = pd.DataFrame({"SessionId": [1, 1, 2, 2, 3, 3], "ItemId": ["a", "u", "b", "a", "v", "u"],
                       "Time": [0, 1, 2, 3, 4, 5]})
    events, item_map = load_events(df), ItemMap(["a", "b"])
    with pytest.raises(ValueError, match=r"2 item ids are not in the item map "
                                         r"\(e\.g\. \['u', 'v'\]\); "
                                         r"pass drop_unknown=True to drop their 3 events"):
        SessionData.from_events(events, item_map)
    data = SessionData.from_events(events, item_map, drop_unknown=True)
    assert data.n_dropped == 3
    assert data.session_ids.tolist() == [1, 2]  # session 3 had only unknown items: it vanishes
    assert data.offsets.tolist() == [0, 1, 3] and data.item_idx.tolist() == [0, 1, 0]
    assert data.n_steps == 1


def test_item_support_and_session_order():
    df = pd.DataFrame({"SessionId": [4, 4, 2, 9, 9, 9], "ItemId": [0, 1, 1, 2, 1, 1],
                       "Time": [5.0, 6.0, 7.0, 5.0, 6.0, 8.0]})
    data = SessionData.from_events(load_events(df), ItemMap([0, 1, 2, 3]))
    support = data.item_support(4)
    assert support.tolist() == [1, 4, 1, 0] and support.dtype == np.int64
    with pytest.raises(ValueError, match="n_items=2 is too small"):
        data.item_support(2)
    assert data.session_ids.tolist() == [2, 4, 9]
    assert data.session_order().tolist() == [1, 2, 0]  # start 5 (tie: id order), 5, then 7
    assert data.session_order(time_sort=False).tolist() == [0, 1, 2]
    random_order = data.session_order(rng=np.random.default_rng(3))
    assert random_order.tolist() == np.random.default_rng(3).permutation(3).tolist()
    assert random_order.dtype == np.int64
