"""The authors' own files and command-line habits, accepted as they are.

The reference implementations keep parameters in Python files holding one
``gru4rec_params = OrderedDict([...])`` and parameter spaces as JSON lines; their run.py takes the
model path first with a bare ``-l`` and prints ``Recall@N: x MRR@N: y`` per cut-off and
``PRIMARY METRIC: v`` for scripts; their paropt.py has its own flag names. The tests write files
in those formats themselves (no file of the authors is copied here).
"""
import json

import numpy as np
import pytest

import evaluation
import gru4rec
from gru4rec_lib import cli, synthetic, tune
from gru4rec_lib.params import parse_param_string, read_param_file

DEFAULTS = gru4rec.GRU4Rec().get_params()

# The Theano version's layout: an import, then one OrderedDict of (name, value) pairs.
THEANO_FILE = """from collections import OrderedDict
gru4rec_params = OrderedDict([
('loss', 'bpr-max'),
('constrained_embedding', True),
('embedding', 0),
('final_act', 'elu-0.5'),
('layers', [224]),
('n_epochs', 10),
('batch_size', 80),
('dropout_p_embed', 0.5),
('dropout_p_hidden', 0.05),
('learning_rate', 0.05),
('momentum', 0.4),
('n_sample', 2048),
('sample_alpha', 0.4),
('bpreg', 1.95),
('logq', 0.0)
])
"""
THEANO_PARSED = {'loss': 'bpr-max', 'constrained_embedding': True, 'embedding': 0, 'final_act': 'elu-0.5',
                 'layers': (224,), 'n_epochs': 10, 'batch_size': 80, 'dropout_p_embed': 0.5,
                 'dropout_p_hidden': 0.05, 'learning_rate': 0.05, 'momentum': 0.4, 'n_sample': 2048,
                 'sample_alpha': 0.4, 'bpreg': 1.95, 'logq': 0.0}

# The PyTorch port's files say elu_param instead of final_act.
TORCH_FILE = THEANO_FILE.replace("('final_act', 'elu-0.5'),", "('elu_param', 0.5),")

TINY_FILE = """from collections import OrderedDict
gru4rec_params = OrderedDict([
('loss', 'cross-entropy'),
('constrained_embedding', True),
('embedding', 0),
('final_act', 'softmax'),
('layers', [8]),
('n_epochs', 1),
('batch_size', 16),
('learning_rate', 0.1),
('n_sample', 4),
('sample_alpha', 0.5),
('logq', 1.0)
])
"""

# Their JSON parameter space: one object per line.
JSON_SPACE = """{"name":"layers", "dtype":"int", "values":[64,512], "step":32}
{"name":"learning_rate", "dtype":"float", "values":[0.01, 0.25], "step":0.005}
{"name":"momentum", "dtype":"float", "values":[0.0, 0.9], "step":0.05}
{"name":"bpreg", "dtype":"float", "values":[0.0, 2.0], "step":0.05}
{"name":"final_act", "dtype":"categorical", "values":["elu-0.5", "elu-1", "linear"]}
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- Python parameter files
def test_theano_param_file_reads_as_typed_data(tmp_path):
    got = read_param_file(write(tmp_path, 'best.py', THEANO_FILE), DEFAULTS)
    assert got == THEANO_PARSED and list(got) == list(THEANO_PARSED)
    assert type(got['learning_rate']) is float and type(got['n_epochs']) is int


def test_pytorch_elu_param_becomes_final_act(tmp_path):
    got = read_param_file(write(tmp_path, 'torch.py', TORCH_FILE), DEFAULTS)
    assert got == THEANO_PARSED and list(got) == list(THEANO_PARSED)  # final_act where elu_param stood
    for value, final_act in (('1', 'elu-1'), ('1.0', 'elu-1'), ('0.25', 'elu-0.25'), ('0', 'linear')):
        assert parse_param_string(f'loss=bpr-max,elu_param={value}', DEFAULTS)['final_act'] == final_act
    # the loss may come after elu_param, and the model's default loss (bpr-max) counts too
    assert parse_param_string('elu_param=1,loss=top1-max', DEFAULTS) == {'loss': 'top1-max', 'final_act': 'elu-1'}
    assert parse_param_string('elu_param=0.5', DEFAULTS) == {'final_act': 'elu-0.5'}


def test_elu_param_is_ignored_with_cross_entropy_as_in_the_port():
    assert parse_param_string('loss=cross-entropy,elu_param=0.5', DEFAULTS) == {'loss': 'cross-entropy'}


@pytest.mark.parametrize('text, message', [
    ('elu_param=0.5,final_act=elu-1', 'give either final_act or elu_param'),
    ('elu_param=-1', "parameter 'elu_param': expected a number >= 0"),
    ('elu_param=abc', "parameter 'elu_param': cannot read 'abc'"),
])
def test_elu_param_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_param_string(text, DEFAULTS)


@pytest.mark.parametrize('text, value', [
    ('adapt=rmsprop,adapt_params=0.8', {'decay': 0.8}),
    ('adapt_params=0.8,adapt=adadelta', {'decay': 0.8}),
    ('adapt=adam,adapt_params=0.8/0.99', {'beta1': 0.8, 'beta2': 0.99}),
    ('adapt=adam,adapt_params=beta2:0.9', {'beta2': 0.9}),
])
def test_theano_adapt_params_lists(text, value):
    assert parse_param_string(text, DEFAULTS)['adapt_params'] == value


def test_theano_adapt_params_list_in_a_file(tmp_path):
    text = "gru4rec_params = OrderedDict([('adapt', 'adam'), ('adapt_params', [0.8, 0.99])])\n"
    got = read_param_file(write(tmp_path, 'adam.py', "from collections import OrderedDict\n" + text), DEFAULTS)
    assert got == {'adapt': 'adam', 'adapt_params': {'beta1': 0.8, 'beta2': 0.99}}
    empty = "gru4rec_params = OrderedDict([('adapt', 'adagrad'), ('adapt_params', [])])\n"
    assert read_param_file(write(tmp_path, 'e.py', empty), DEFAULTS) == {'adapt': 'adagrad', 'adapt_params': None}


def test_adapt_params_list_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"adapt='adam' takes 2 values \(beta1/beta2\), got 1"):
        parse_param_string('adapt=adam,adapt_params=0.9', DEFAULTS)
    with pytest.raises(ValueError, match="adapt='adagrad' takes no values"):
        parse_param_string('adapt_params=0.9', DEFAULTS)


def test_dict_literal_and_renamed_names(tmp_path):
    text = "gru4rec_params = {'loss': 'top1-max', 'layers': [100, 100], 'sample_cache_max_size': 5000}\n"
    got = read_param_file(write(tmp_path, 'd.py', text), DEFAULTS)
    assert got == {'loss': 'top1-max', 'layers': (100, 100), 'sample_store': 5000}
    text = "import collections\ngru4rec_params = collections.OrderedDict([('layers', 100), ('adapt', None)])\n"
    assert read_param_file(write(tmp_path, 'c.py', text), DEFAULTS) == {'layers': (100,), 'adapt': None}


def test_names_without_an_equivalent_say_so():
    with pytest.raises(ValueError, match="'compatibility_mode'.*no equivalent"):
        parse_param_string('compatibility_mode=True', DEFAULTS)


@pytest.mark.parametrize('body, message', [
    ("import os\nos.system('touch HACKED')\ngru4rec_params = OrderedDict([])\n", 'line 2: only'),
    ("gru4rec_params = OrderedDict([('layers', list(range(3)))])\n", 'line 2: the value of .layers. must be a lit'),
    ("gru4rec_params = OrderedDict([('layers', [100])])\nprint('x')\n", 'line 3: only'),
    ("params = OrderedDict([('layers', [100])])\n", 'gru4rec_params'),
    ("gru4rec_params = OrderedDict([('layers', [100]), ('layers', [10])])\n", 'more than once'),
    ("gru4rec_params = OrderedDict([('layrs', [100])])\n", "unknown parameter 'layrs'"),
    ("gru4rec_params = OrderedDict([('layers', [1.5])])\n", "parameter 'layers'"),
    ("gru4rec_params = OrderedDict([('layers', [100])]\n", 'not valid Python'),
    ("gru4rec_params = OrderedDict([('layers', [100], 3)])\n", r'\(name, value\) pairs'),
])
def test_python_files_are_read_as_data_never_run(tmp_path, monkeypatch, body, message):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, 'p.py', 'from collections import OrderedDict\n' + body)
    with pytest.raises(ValueError, match=message) as err:
        read_param_file(path, DEFAULTS)
    assert str(path) in str(err.value)
    assert not (tmp_path / 'HACKED').exists()


# ---------------------------------------------------------------- JSON parameter spaces
def test_json_space_reads_as_dimensions(tmp_path):
    space = tune.read_space(write(tmp_path, 'space.json', JSON_SPACE), DEFAULTS)
    assert list(space) == ['layers', 'learning_rate', 'momentum', 'bpreg', 'final_act']
    assert (space['layers'].kind, space['layers'].low, space['layers'].high, space['layers'].step) == (
        'int', 64, 512, 32)
    assert (space['learning_rate'].kind, space['learning_rate'].step, space['learning_rate'].log) == (
        'float', 0.005, False)
    assert space['final_act'].choices == ('elu-0.5', 'elu-1', 'linear')


def test_json_space_log_scale_and_elu_param(tmp_path):
    text = ('{"name":"learning_rate", "dtype":"float", "values":[0.01, 0.25], "log":true}\n\n'
            '{"name":"elu_param", "dtype":"categorical", "values":[0.5, 1, 0]}\n'
            '{"name":"layers", "dtype":"categorical", "values":[[100], [100, 100]]}\n')
    space = tune.read_space(write(tmp_path, 's.json', text), DEFAULTS)
    assert space['learning_rate'].log and space['learning_rate'].step is None
    assert space['final_act'].choices == ('elu-0.5', 'elu-1', 'linear')
    assert space['layers'].choices == ('100', '100/100')


@pytest.mark.parametrize('line, message', [
    ('{"name":"momentum", "dtype":"uniform", "values":[0, 1]}', "unknown type 'uniform'"),
    ('{"name":"momentum", "dtype":"float", "values":[0, 0.5, 1]}', r"'values' must be \[low, high\]"),
    ('{"name":"momentum", "dtype":"float"}', "missing 'values'"),
    ('{"name":"momentum", "dtype":"float", "values":[0, 1], "scale":"log"}', "unknown key 'scale'"),
    ('{"name":"momentm", "dtype":"float", "values":[0, 1]}', "unknown parameter 'momentm'"),
    ('{"name":"momentum", "dtype":"float", "values":[0, 1]', 'not valid JSON'),
    ('{"name":"elu_param", "dtype":"float", "values":[0, 1]}', 'elu_param'),
])
def test_bad_json_space_lines_name_the_line(tmp_path, line, message):
    path = write(tmp_path, 's.json', '{"name":"layers", "dtype":"int", "values":[8, 16]}\n' + line + '\n')
    with pytest.raises(ValueError, match=message) as err:
        tune.read_space(path, DEFAULTS)
    assert f'{path}, line 2' in str(err.value)


def test_paropt_flag_aliases(tmp_path):
    args = tune.build_parser().parse_args(
        ['tr.tsv', 'va.tsv', '-opf', 'space.json', '-fp', 'loss=bpr-max', '-nt', '7', '-pm', 'mrr', '-m', '5',
         '-fm', '1', '5', '10'])
    assert (args.space, args.params, args.n_trials, args.final_measure) == (
        'space.json', 'loss=bpr-max', 7, [1, 5, 10])
    assert tune.metric_from_args(args) == 'mrr@5'
    args = tune.build_parser().parse_args(['tr.tsv', 'va.tsv', '-sp', 's.txt'])
    assert tune.metric_from_args(args) == 'recall@20'


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope='module')
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp('authors')
    events = synthetic.generate_sessions(n_sessions=300, n_items=30, seed=2)
    train, test = synthetic.split_by_time(events, test_fraction=0.2)
    paths = {'train': folder / 'train.tsv', 'test': folder / 'test.tsv', 'folder': folder}
    train.to_csv(paths['train'], sep='\t', index=False)
    test.to_csv(paths['test'], sep='\t', index=False)
    return paths


def metric_lines(out):
    """{N: (recall, mrr)} from 'Recall@N: x MRR@N: y' lines, and the PRIMARY METRIC values."""
    cuts, primary = {}, []
    for line in out.splitlines():
        words = line.split()
        if line.startswith('Recall@') and len(words) == 4:
            cuts[int(words[0][7:-1])] = (float(words[1]), float(words[3]))
        elif line.startswith('PRIMARY METRIC: '):
            primary.append(float(line.split(': ')[1]))
    return cuts, primary


@pytest.mark.slow
def test_run_with_an_authors_param_file_then_load_model_path_first(data, capsys):
    param_file = write(data['folder'], 'tiny_best.py', TINY_FILE)
    model_path = data['folder'] / 'model.npz'
    code = cli.main([str(data['train']), '-pf', str(param_file), '-s', str(model_path), '-t', str(data['test']),
                     '-m', '5', '10', '-pm', 'mrr', '-lpm', '-ss', '4000', '-d', 'cpu', '-q'])
    assert code == 0
    cuts, primary = metric_lines(capsys.readouterr().out)
    model = gru4rec.GRU4Rec.load(model_path)
    assert model.loss == 'cross-entropy' and model.layers == (8,) and model.sample_store == 4000
    reference = evaluation.evaluate(model, data['test'], cutoffs=(5, 10))
    assert cuts == {n: (round(reference['recall'][n], 6), round(reference['mrr'][n], 6)) for n in (5, 10)}
    assert primary == [pytest.approx(reference['mrr'][5], abs=1e-12)]  # the first cut-off, as theirs
    # their habit: the model path first, a bare -l
    assert cli.main([str(model_path), '-l', '-t', str(data['test']), '-m', '5', '-lpm', '-q']) == 0
    cuts, primary = metric_lines(capsys.readouterr().out)
    assert cuts[5] == (round(reference['recall'][5], 6), round(reference['mrr'][5], 6))
    assert primary == [pytest.approx(reference['recall'][5], abs=1e-12)]


@pytest.mark.slow
def test_paropt_with_an_authors_space_and_flags(data, tmp_path, capsys):
    space = write(tmp_path, 'space.json', '{"name":"learning_rate", "dtype":"float", "values":[0.05, 0.2], '
                  '"step":0.05}\n{"name":"elu_param", "dtype":"categorical", "values":[0.5, 0]}\n')
    best, trials = tmp_path / 'best.txt', tmp_path / 'trials.json'
    code = tune.main([str(data['train']), str(data['test']), '-opf', str(space), '-fp',
                      'loss=bpr-max,layers=8,n_epochs=1,batch_size=16,n_sample=4,sample_store=2000',
                      '-nt', '2', '-pm', 'mrr', '-m', '5', '-fm', '5', '10', '-o', str(best), '--json', str(trials),
                      '--seed', '1', '--log-level', 'WARNING'])
    assert code == 0
    payload = json.loads(trials.read_text())
    assert payload['metric'] == 'mrr@5' and len(payload['trials']) == 2
    params = read_param_file(best, DEFAULTS)
    assert params['final_act'] in ('elu-0.5', 'linear') and params['layers'] == (8,)
    best_trial = payload['trials'][payload['best_trial']]
    assert payload['best_value'] == best_trial['mrr']['5']
    cuts, _ = metric_lines(capsys.readouterr().out)
    assert cuts == {n: (round(best_trial['recall'][str(n)], 6), round(best_trial['mrr'][str(n)], 6))
                    for n in (5, 10)}


# ---------------------------------------------------------------- final_act may be left out
@pytest.fixture(scope='module')
def tiny_events():
    return synthetic.generate_sessions(n_sessions=80, n_items=20, seed=4)


@pytest.mark.parametrize('loss, natural', [('cross-entropy', 'softmax'), ('xe_logit', 'softmax_logit')])
@pytest.mark.slow
def test_final_act_left_out_is_the_losses_own(tiny_events, loss, natural):
    common = dict(loss=loss, layers=(6,), n_epochs=1, batch_size=8, n_sample=4, sample_store=400,
                  show_progress=False)
    implicit = gru4rec.GRU4Rec(**common)
    assert implicit.get_params()['final_act'] is None
    implicit.fit(tiny_events)
    explicit = gru4rec.GRU4Rec(**common, final_act=natural).fit(tiny_events)
    np.testing.assert_array_equal(implicit.epoch_losses_, explicit.epoch_losses_)
    items = tiny_events.ItemId.iloc[:3].tolist()
    got, want = (model.recommend([1, 2, 3], items, k=5) for model in (implicit, explicit))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.slow
def test_final_act_wrong_pairing_still_fails(tiny_events):
    with pytest.raises(ValueError, match="final_act='linear' is invalid: expected 'softmax' with loss='cross-entropy'"):
        gru4rec.GRU4Rec(loss='cross-entropy', final_act='linear', n_epochs=1, show_progress=False).fit(tiny_events)
    model = gru4rec.GRU4Rec(loss='bpr-max', final_act=None, layers=(6,), n_epochs=1, batch_size=8, n_sample=4,
                            sample_store=400, show_progress=False).fit(tiny_events)
    assert model.get_params()['final_act'] is None and len(model.epoch_losses_) == 1
