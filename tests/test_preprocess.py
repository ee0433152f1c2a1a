"""RSC15 preprocessing (examples/rsc15/preprocess.py) on a crafted raw file where every rule fires."""
import gzip

import pytest

from scripts import load_script

preprocess = load_script('examples/rsc15/preprocess.py', 'rsc15_preprocess')

T0 = 1396310400  # 2014-04-01T00:00:00Z
A, B, C, D = 101, 102, 103, 104
X = 401  # 5 events, one of them in a length-1 session: 4 remain after rule 1, so it is dropped
R = 301  # 2 events: rare
Z = 201  # 5 events, all in the last day: survives the item filter, unknown to train_full
W = 501  # 5 events, all in train_full's last day: unknown to train_tr


def at(day, hour, minute, second=0.0):
    """(raw ISO timestamp, unix seconds) of 2014-04-(1+day) hour:minute:second UTC."""
    iso = f'2014-04-{1 + day:02d}T{hour:02d}:{minute:02d}:{second:06.3f}Z'
    return iso, T0 + day * 86400 + hour * 3600 + minute * 60 + second


# (session, (day, hour, minute[, second]), item) in file order; the last event of the data is
# day 9 12:00:00.5, so test = sessions ending at or after day 8 12:00:00.5; train_full's last event
# is day 8 12:00:00, so train_valid = its sessions ending at or after day 7 12:00:00.
EVENTS = [
    (1, (0, 8, 0), A), (1, (0, 8, 5), B), (1, (0, 8, 10), C),
    (2, (1, 9, 0), B), (2, (1, 9, 1), C), (2, (1, 9, 2), D),
    (25, (8, 11, 0), C), (25, (8, 12, 0), D),                   # last train_full session -> valid
    (3, (2, 10, 0), A), (3, (2, 10, 1), X),                     # -> [A] -> dropped
    (4, (2, 11, 0), X), (4, (2, 11, 1), B),                     # -> [B] -> dropped
    (5, (3, 12, 0), C), (5, (3, 12, 1), X),                     # -> [C] -> dropped
    (6, (3, 13, 0), X),                                         # length 1
    (7, (3, 14, 0), D), (7, (3, 14, 1), R),                     # -> [D] -> dropped
    (8, (4, 15, 0), A), (8, (4, 15, 30), R), (8, (4, 15, 45), D),  # -> [A, D]
    (9, (5, 16, 0), A), (9, (5, 16, 10), C),
    (11, (7, 12, 0), W), (11, (7, 12, 1), W), (11, (7, 12, 2), D),  # valid: -> [D] -> dropped
    (12, (7, 13, 0), C), (12, (7, 13, 1), W), (12, (7, 13, 2), W), (12, (7, 13, 3), W),
    (12, (7, 13, 4), D),                                        # valid: -> [C, D]
    (13, (6, 20, 0), D), (13, (7, 12, 0), B),                   # ends exactly on the valid boundary
    (14, (7, 9, 0), B), (14, (7, 11, 59, 59.75), D),            # ends just before it: train_tr
    (20, (9, 11, 0), A), (20, (9, 11, 30), Z), (20, (9, 12, 0, 0.5), B),  # test: -> [A, B]
    (21, (9, 8, 0), C), (21, (9, 8, 5), Z),                     # test: -> [C] -> dropped
    (22, (9, 9, 0), Z), (22, (9, 9, 1), Z), (22, (9, 9, 2), Z),  # test: -> [] -> dropped
    (23, (8, 22, 0), D), (23, (9, 1, 0), A),                    # straddles the test boundary
    (24, (8, 11, 30), B), (24, (8, 12, 0, 0.5), C),             # ends exactly on the boundary
]

EXPECTED_SESSIONS = {
    'train_full': [1, 2, 25, 8, 9, 11, 12, 13, 14],
    'test': [20, 23, 24],
    'train_tr': [1, 2, 8, 9, 14],
    'train_valid': [25, 12, 13],
}
DROPPED = {'train_full': {X, R, Z}, 'test': {Z}, 'train_tr': {X, R, Z, W}, 'train_valid': {W}}


def raw_text():
    lines = []
    for session, when, item in EVENTS:
        lines.append(f'{session},{at(*when)[0]},{item},0')
    return '\n'.join(lines) + '\n'


def expected_text(name):
    lines = ['SessionId\tItemId\tTime']
    for session in EXPECTED_SESSIONS[name]:
        for s, when, item in EVENTS:
            if s == session and item not in DROPPED[name]:
                lines.append(f'{s}\t{item}\t{at(*when)[1]!r}')
    return '\n'.join(lines) + '\n'


@pytest.fixture
def raw_file(tmp_path):
    path = tmp_path / 'yoochoose-clicks.dat'
    path.write_text(raw_text())
    return path


def test_time_conversion_is_utc_seconds():
    seconds = preprocess.to_unix_seconds(preprocess.pd.Series(['2014-04-07T10:51:09.277Z']))
    assert seconds.tolist() == [1396867869.277]
    assert at(0, 8, 0) == ('2014-04-01T08:00:00.000Z', 1396339200)


def test_main_writes_the_four_splits(raw_file, tmp_path, capsys):
    out = tmp_path / 'out'
    preprocess.main([str(raw_file), str(out)])
    assert sorted(p.name for p in out.iterdir()) == sorted(preprocess.OUTPUT_FILES.values())
    for name, file_name in preprocess.OUTPUT_FILES.items():
        assert (out / file_name).read_text() == expected_text(name), name
    text = (out / 'rsc15_train_full.txt').read_text().splitlines()
    assert text[:2] == ['SessionId\tItemId\tTime', '1\t101\t1396339200.0']
    assert (out / 'rsc15_test.txt').read_text().splitlines()[2] == '20\t102\t1397131200.5'
    printed = capsys.readouterr().out
    assert 'Full train set\n\tEvents: 24\n\tSessions: 9\n\tItems: 5\n' in printed
    assert 'Test set\n\tEvents: 6\n\tSessions: 3\n\tItems: 4\n' in printed
    assert 'Validation set\n\tEvents: 6\n\tSessions: 3\n\tItems: 3\n' in printed
    assert '\tSpan: 2014-04-01 08:00:00 / 2014-04-09 12:00:00 UTC' in printed


def test_preprocess_frames_and_dtypes(raw_file):
    raw = preprocess.read_clicks(raw_file, chunksize=7)  # several chunks
    assert len(raw) == len(EVENTS)
    assert [str(t) for t in raw.dtypes] == ['int32', 'int64', 'float64']
    frames = preprocess.preprocess(raw)
    assert set(frames) == set(EXPECTED_SESSIONS)
    for name, frame in frames.items():
        assert list(frame.columns) == ['SessionId', 'ItemId', 'Time']
        assert frame.index.tolist() == list(range(len(frame)))
        assert list(dict.fromkeys(frame['SessionId'])) == EXPECTED_SESSIONS[name]
    assert raw.shape == (len(EVENTS), 3)  # input untouched


def test_gzip_input_gives_the_same_files(raw_file, tmp_path):
    gz = tmp_path / 'yoochoose-clicks.dat.gz'
    gz.write_bytes(gzip.compress(raw_file.read_bytes()))
    preprocess.main([str(gz), str(tmp_path / 'gz')])
    assert (tmp_path / 'gz' / 'rsc15_train_valid.txt').read_text() == expected_text('train_valid')


def test_empty_file_raises(tmp_path):
    empty = tmp_path / 'empty.dat'
    empty.write_text('')
    with pytest.raises(ValueError, match='no rows'):
        preprocess.read_clicks(empty)
