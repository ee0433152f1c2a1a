"""Preprocess the RecSys Challenge 2015 clicks (``yoochoose-clicks.dat``) into the RSC15 splits.

Usage::

    python examples/rsc15/preprocess.py path/to/yoochoose-clicks.dat data/rsc15

The raw file is comma separated without a header: SessionID, Timestamp (ISO 8601 in UTC, e.g.
``2014-04-07T10:51:09.277Z``), ItemID, Category. A ``.gz`` file works too. The rules (the authors' RSC15 preprocessing):

1. drop sessions of length 1, then items with fewer than 5 events, then sessions shorter than 2;
2. test = sessions whose last event is in the final day (last event time >= tmax - 86400 s),
   train_full = the rest; the test set keeps only items seen in train_full, then only sessions of
   length >= 2;
3. train_full is split the same way into train_tr and train_valid (the last day of train_full).

Rows keep the raw file's order. Each split is written tab separated with the header
``SessionId, ItemId, Time`` (Time in unix seconds, float) as ``rsc15_train_full.txt``,
``rsc15_test.txt``, ``rsc15_train_tr.txt`` and ``rsc15_train_valid.txt``.

Published sizes for the full file: train_full 31,637,239 events / 7,966,257 sessions /
37,483 items; test 71,222 events / 15,324 sessions.

Times are read as UTC. The reference script parses them as local time, so its files are shifted
by the UTC offset of the machine that ran it (e.g. -7200 s in CEST); the splits are the same,
since they depend only on time differences (the data has no daylight-saving change).
"""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd

SESSION, ITEM, TIME = 'SessionId', 'ItemId', 'Time'
DAY = 86400.0
MIN_ITEM_SUPPORT = 5
OUTPUT_FILES = {
    'train_full': 'rsc15_train_full.txt',
    'test': 'rsc15_test.txt',
    'train_tr': 'rsc15_train_tr.txt',
    'train_valid': 'rsc15_train_valid.txt',
}
TITLES = {'train_full': 'Full train set', 'test': 'Test set',
          'train_tr': 'Train set (for tuning)', 'train_valid': 'Validation set'}


def to_unix_seconds(timestamps):
    """ISO 8601 UTC strings -> float64 unix seconds (microsecond precision, correctly rounded)."""
    parsed = pd.to_datetime(timestamps, format='ISO8601', utc=True)
    # Integer microseconds are exact in float64 (< 2**53), so one division rounds correctly.
    return parsed.dt.as_unit('us').astype('int64').to_numpy() / 1e6


def read_clicks(path, chunksize=1_000_000):
    """Read the raw clicks file into a frame of SessionId (int32), ItemId (int64), Time (float64).

    Only the three needed columns are read, in chunks, so the string timestamps of the full
    33M-row file never sit in memory at once.
    """
    reader = pd.read_csv(
        path, sep=',', header=None, names=['SessionId', 'Timestamp', 'ItemId', 'Category'],
        usecols=['SessionId', 'Timestamp', 'ItemId'],
        dtype={'SessionId': np.int32, 'Timestamp': str, 'ItemId': np.int64}, chunksize=chunksize)
    chunks = [pd.DataFrame({SESSION: chunk['SessionId'].to_numpy(), ITEM: chunk['ItemId'].to_numpy(),
                            TIME: to_unix_seconds(chunk['Timestamp'])})
              for chunk in reader]
    data = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()
    if data.empty:
        raise ValueError(f'{path}: no rows; expected SessionID,Timestamp,ItemID,Category lines')
    return data


def _keep_sessions_with(data, min_length):
    lengths = data[SESSION].value_counts()
    return data[data[SESSION].isin(lengths.index[lengths >= min_length])]


def filter_clicks(data):
    """Drop sessions of length 1, then items with < 5 events, then sessions shorter than 2."""
    data = _keep_sessions_with(data, 2)
    supports = data[ITEM].value_counts()
    data = data[data[ITEM].isin(supports.index[supports >= MIN_ITEM_SUPPORT])]
    return _keep_sessions_with(data, 2)


def split_last_day(data):
    """Split off the sessions whose last event is in the final day of ``data``.

    Returns ``(train, test)``; test keeps only items present in train, then sessions of length >= 2.
    """
    last_times = data.groupby(SESSION)[TIME].max()
    test_sessions = last_times.index[last_times >= data[TIME].max() - DAY]
    in_test = data[SESSION].isin(test_sessions)
    train, test = data[~in_test], data[in_test]
    test = test[test[ITEM].isin(train[ITEM].unique())]
    return train, _keep_sessions_with(test, 2)


def preprocess(raw_df):
    """Apply the RSC15 rules to a frame from :func:`read_clicks`.

    Returns a dict with keys ``train_full``, ``test``, ``train_tr``, ``train_valid``; each frame
    has the columns SessionId, ItemId, Time and a fresh 0..n-1 index.
    """
    data = filter_clicks(raw_df)[[SESSION, ITEM, TIME]]
    train_full, test = split_last_day(data)
    del data  # free the filtered copy of the full file before the second split
    train_tr, train_valid = split_last_day(train_full)
    frames = {'train_full': train_full, 'test': test, 'train_tr': train_tr, 'train_valid': train_valid}
    for frame in frames.values():
        frame.index = pd.RangeIndex(len(frame))  # fresh frames from filtering: no copy needed
    return frames


def describe(title, data):
    """Statistics of one split: events, sessions, items and the (UTC) date span."""
    lines = [title, f'\tEvents: {len(data)}', f'\tSessions: {data[SESSION].nunique()}',
             f'\tItems: {data[ITEM].nunique()}']
    if len(data):
        first, last = pd.to_datetime([data[TIME].min(), data[TIME].max()], unit='s', utc=True)
        lines.append(f'\tSpan: {first:%Y-%m-%d %H:%M:%S} / {last:%Y-%m-%d %H:%M:%S} UTC')
    return '\n'.join(lines)


def write_splits(frames, out_dir):
    """Write each split as a tab-separated file with a header into ``out_dir`` (created if needed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, file_name in OUTPUT_FILES.items():
        frames[name].to_csv(out_dir / file_name, sep='\t', index=False)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Preprocess yoochoose-clicks.dat (RecSys Challenge 2015) into the RSC15 '
                    'train_full/test and train_tr/train_valid splits used by GRU4Rec.')
    parser.add_argument('raw_path', metavar='RAW_PATH',
                        help='yoochoose-clicks.dat (or .dat.gz) from the RecSys Challenge 2015')
    parser.add_argument('out_dir', metavar='OUT_DIR',
                        help='folder for the rsc15_*.txt files (created if missing)')
    args = parser.parse_args(argv)
    raw = read_clicks(args.raw_path)
    print(describe('Raw data', raw), end='\n\n')
    frames = preprocess(raw)
    for name in OUTPUT_FILES:
        print(describe(TITLES[name], frames[name]), end='\n\n')
    write_splits(frames, args.out_dir)
    print(f'Wrote {", ".join(OUTPUT_FILES.values())} to {args.out_dir}')


if __name__ == '__main__':
    main()
