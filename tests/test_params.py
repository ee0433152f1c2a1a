"""Parameter strings and files (params.py) and the published parameter files (paramfiles/)."""
from pathlib import Path

import numpy as np
import pytest

from gru4rec_lib.params import format_param_file, parse_param_string, read_param_file

PARAMFILES = Path(__file__).resolve().parents[1] / 'paramfiles'

# GRU4Rec's parameters and defaults (GRU4Rec().get_params()).
DEFAULTS = dict(
    loss='bpr-max', final_act=None, hidden_act='tanh', layers=(100,), n_epochs=10,
    batch_size=32, dropout_p_embed=0.0, dropout_p_hidden=0.0, learning_rate=0.1, momentum=0.0,
    lmbd=0.0, embedding=0, constrained_embedding=False, n_sample=2048, sample_alpha=0.75,
    smoothing=0.0, bpreg=1.0, logq=0.0, sample_store=10000000, init_as_normal=False, sigma=0.0,
    adapt='adagrad', adapt_params=None, grad_cap=0.0, train_random_order=False, time_sort=True,
    steps_per_call=None, item_update='auto', seed=42, device=None, show_progress=True, session_key='SessionId',
    item_key='ItemId', time_key='Time', bptt=1, user_key=None, reset_between_sessions=False,
    max_live_sessions=100000)


def parse(text):
    return parse_param_string(text, DEFAULTS)


# --- typing driven by the defaults ---

def test_parse_typical_string():
    got = parse('loss=bpr-max,layers=100/100,final_act=elu-0.5,n_sample=0,'
                'learning_rate=1e-3,constrained_embedding=True')
    assert got == {'loss': 'bpr-max', 'layers': (100, 100), 'final_act': 'elu-0.5', 'n_sample': 0,
                   'learning_rate': 0.001, 'constrained_embedding': True}
    assert list(got) == ['loss', 'layers', 'final_act', 'n_sample', 'learning_rate',
                         'constrained_embedding']
    assert type(got['n_sample']) is int and type(got['learning_rate']) is float


@pytest.mark.parametrize('text, value', [
    ('true', True), ('True', True), ('TRUE', True), ('1', True),
    ('false', False), ('False', False), ('0', False)])
def test_bool(text, value):
    assert parse(f'time_sort={text}') == {'time_sort': value}


@pytest.mark.parametrize('text, value', [
    ('0.05', 0.05), ('1e-3', 0.001), ('1E-6', 1e-6), ('2', 2.0), ('-0.5', -0.5), ('.25', 0.25)])
def test_float(text, value):
    got = parse(f'learning_rate={text}')['learning_rate']
    assert got == value and type(got) is float


def test_int_and_layers():
    assert parse('batch_size=48,n_epochs=5,sample_store=0') == {
        'batch_size': 48, 'n_epochs': 5, 'sample_store': 0}
    assert parse('layers=100') == {'layers': (100,)}
    assert parse('layers=512/256/128') == {'layers': (512, 256, 128)}
    assert parse_param_string('layers=3/4', {'layers': [100]}) == {'layers': [3, 4]}


def test_strings_kept_as_is():
    assert parse('final_act=selu-1.05-1.67,hidden_act=relu,session_key=session id') == {
        'final_act': 'selu-1.05-1.67', 'hidden_act': 'relu', 'session_key': 'session id'}


def test_several_type_parameters():
    assert parse('embedding=64') == {'embedding': 64}
    assert parse('embedding=layersize') == {'embedding': 'layersize'}
    assert parse('seed=7') == {'seed': 7}
    assert parse('seed=None') == {'seed': None}
    assert parse('adapt=None') == {'adapt': None}
    assert parse('adapt=null') == {'adapt': None}
    assert parse('adapt=rmsprop') == {'adapt': 'rmsprop'}
    assert parse('device=cuda') == {'device': 'cuda'}
    assert parse('device=NONE') == {'device': None}
    assert parse('device=cuda:0') == parse('device=cuda0') == parse('device=GPU0') == {'device': 'gpu'}
    with pytest.raises(ValueError, match='CUDA_VISIBLE_DEVICES=1'):
        parse('device=cuda:1')
    assert parse('adapt_params=decay:0.9/epsilon:1e-6') == {
        'adapt_params': {'decay': 0.9, 'epsilon': 1e-6}}
    assert parse('adapt_params=beta1:0.9') == {'adapt_params': {'beta1': 0.9}}
    assert parse('adapt_params={}') == {'adapt_params': {}}
    assert parse('adapt_params=None') == {'adapt_params': None}
    assert parse('user_key=UserId,session_key=none,bptt=4') == {'user_key': 'UserId', 'session_key': None, 'bptt': 4}
    assert parse('reset_between_sessions=1') == {'reset_between_sessions': True}


def test_none_default_without_special_rule():
    defaults = {'extra': None}
    assert parse_param_string('extra=abc', defaults) == {'extra': 'abc'}
    assert parse_param_string('extra=null', defaults) == {'extra': None}


def test_empty_items_spaces_and_empty_string():
    assert parse(' loss = cross-entropy ,, layers = 100/100 ,') == {
        'loss': 'cross-entropy', 'layers': (100, 100)}
    assert parse('') == {}
    assert parse(' , ') == {}


# --- errors ---

def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown parameter 'los'; close matches: loss") as err:
        parse('los=bpr-max')
    assert 'parameter string' in str(err.value)
    with pytest.raises(ValueError, match=r"'dropout_p_hiden'; close matches: dropout_p_hidden"):
        parse('dropout_p_hiden=0.1')
    with pytest.raises(ValueError, match=r"unknown parameter 'zzz'; known parameters: adapt, "):
        parse('zzz=1')


@pytest.mark.parametrize('text, expected', [
    ('batch_size=3.5', 'an integer'),
    ('batch_size=abc', 'an integer'),
    ('learning_rate=fast', 'a finite number'),
    ('learning_rate=nan', 'a finite number'),
    ('learning_rate=inf', 'a finite number'),
    ('constrained_embedding=yes', 'a boolean'),
    ('constrained_embedding=2', 'a boolean'),
    ('layers=100/', "integers separated by '/'"),
    ('layers=100,200', "integers separated by '/'"),  # the comma splits items: '200' has no '='
    ('layers=1.5', "integers separated by '/'"),
    ('embedding=big', "an integer or 'layersize'"),
    ('seed=random', 'an integer or None'),
    ('adapt_params=decay=0.9', "name:value pairs"),
    ('adapt_params=decay:0.9/decay:0.8', "name:value pairs"),
    ('adapt_params=decay:x', "name:value pairs"),
])
def test_bad_value_names_parameter_value_and_type(text, expected):
    with pytest.raises(ValueError) as err:
        parse(text)
    message = str(err.value)
    if text == 'layers=100,200':
        assert "expected name=value, got '200'" in message
        return
    name, value = text.split('=', 1)
    assert f'parameter {name!r}: cannot read {value!r} as {expected}' in message


@pytest.mark.parametrize('text, message', [
    ('loss=bpr-max,loss=top1', "parameter 'loss' is given more than once"),
    ('loss', "expected name=value, got 'loss'"),
    ('=5', "expected name=value, got '=5'"),
    ('loss=', "parameter 'loss' has an empty value"),
])
def test_malformed_items(text, message):
    with pytest.raises(ValueError, match=message):
        parse(text)


# --- files ---

def test_read_param_file_comments_blank_lines(tmp_path):
    path = tmp_path / 'p.txt'
    path.write_text('# a comment\n\nloss=cross-entropy   # trailing comment\n'
                    '  layers = 200/100\n\n# n_sample=1\nlogq=1\n')
    assert read_param_file(path, DEFAULTS) == {
        'loss': 'cross-entropy', 'layers': (200, 100), 'logq': 1.0}


def test_read_param_file_errors_name_the_line(tmp_path):
    path = tmp_path / 'p.txt'
    path.write_text('loss=cross-entropy\n# ok\nbatch_size=big\n')
    with pytest.raises(ValueError, match=r"p\.txt, line 3: parameter 'batch_size': cannot read "
                                         r"'big' as an integer"):
        read_param_file(path, DEFAULTS)
    path.write_text('loss=cross-entropy\nloss=bpr-max\n')
    with pytest.raises(ValueError, match="line 2: parameter 'loss' is given more than once"):
        read_param_file(path, DEFAULTS)


def test_format_param_file_text():
    text = format_param_file(
        {'loss': 'bpr-max', 'layers': (100, 50), 'learning_rate': 0.05, 'n_sample': 2048,
         'constrained_embedding': True, 'adapt': None, 'adapt_params': {'decay': 0.9, 'eps': 1e-6},
         'seed': None, 'embedding': 'layersize'},
        comment='best of 200 trials\nMRR@20 0.3205')
    assert text == ('# best of 200 trials\n# MRR@20 0.3205\n'
                    'loss=bpr-max\nlayers=100/50\nlearning_rate=0.05\nn_sample=2048\n'
                    'constrained_embedding=True\nadapt=None\nadapt_params=decay:0.9/eps:1e-06\n'
                    'seed=None\nembedding=layersize\n')


def test_format_converts_numpy_scalars():
    text = format_param_file({'learning_rate': np.float64(0.07), 'batch_size': np.int64(48),
                              'time_sort': np.bool_(False), 'layers': [np.int64(64)]})
    assert text == 'learning_rate=0.07\nbatch_size=48\ntime_sort=False\nlayers=64\n'


def test_round_trip_every_parameter(tmp_path):
    params = dict(DEFAULTS, layers=(224, 96), learning_rate=0.045000000000000005, sigma=1e-3,
                  adapt_params={'decay': 0.9, 'epsilon': 1e-6}, adapt=None, seed=None,
                  embedding='layersize', device='cpu', final_act='elu-0.5')
    path = tmp_path / 'best.txt'
    path.write_text(format_param_file(params, comment='round trip'))
    back = read_param_file(path, DEFAULTS)
    assert back == params
    assert list(back) == list(params)
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in params.items()}
    assert read_param_file(path, DEFAULTS) == parse(format_param_file(params).replace('\n', ','))


@pytest.mark.parametrize('params', [
    {'learning_rate': float('nan')}, {'layers': ()}, {'layers': (1.5,)}, {'loss': 'a#b'},
    {'loss': ''}, {'loss': ' x'}, {'adapt_params': {'a:b': 1.0}}, {'bad name': 1},
    {'loss': object()}])
def test_format_rejects_what_cannot_be_read_back(params):
    with pytest.raises(ValueError):
        format_param_file(params)


# --- the published parameter files ---

def table_row(loss, layers, batch, drop_emb, drop_hid, lr, momentum, alpha, bpreg, logq, final):
    return dict(loss=loss, final_act=final, constrained_embedding=True, embedding=0,
                layers=(layers,), batch_size=batch, dropout_p_embed=drop_emb,
                dropout_p_hidden=drop_hid, learning_rate=lr, momentum=momentum, n_sample=2048,
                sample_alpha=alpha, bpreg=bpreg, logq=logq, n_epochs=10)


def cikm_row(loss, final, shared, drop_hid, lr, momentum, **extra):
    return dict(loss=loss, final_act=final, constrained_embedding=shared, layers=(100,),
                batch_size=32, dropout_p_embed=0.0, dropout_p_hidden=drop_hid, learning_rate=lr,
                momentum=momentum, n_sample=2048, sample_alpha=0.0, **extra, n_epochs=10)


# file -> (parameters, reported Recall@20, MRR@20)
PUBLISHED = {
    'rsc15_xe': (table_row('cross-entropy', 100, 32, 0.1, 0, 0.1, 0, 0.75, 0, 1, 'softmax'),
                 '0.7283', '0.3205'),
    'yoochoose_xe': (table_row('cross-entropy', 480, 48, 0, 0.2, 0.07, 0, 0.2, 0, 1, 'softmax'),
                     '0.6789', '0.3024'),
    'rees46_xe': (table_row('cross-entropy', 512, 240, 0.45, 0, 0.065, 0, 0.5, 0, 1, 'softmax'),
                  '0.5293', '0.2008'),
    'coveo_bprmax': (table_row('bpr-max', 512, 144, 0.35, 0, 0.05, 0.4, 0.2, 1.85, 0, 'elu-1'),
                     '0.3135', '0.1010'),
    'retailrocket_bprmax': (
        table_row('bpr-max', 224, 80, 0.5, 0.05, 0.05, 0.4, 0.4, 1.95, 0, 'elu-0.5'),
        '0.5186', '0.2175'),
    'diginetica_bprmax': (
        table_row('bpr-max', 512, 128, 0.5, 0.3, 0.05, 0.15, 0.3, 0.9, 0, 'elu-1'),
        '0.4995', '0.1542'),
    'cikm2018_rsc15_bprmax': (cikm_row('bpr-max', 'elu-0.5', False, 0, 0.2, 0.3, bpreg=1),
                              '0.7197', '0.3157'),
    'cikm2018_rsc15_bprmax_shared': (cikm_row('bpr-max', 'elu-0.5', True, 0, 0.2, 0.1, bpreg=0.5),
                                     '0.7261', '0.3124'),
    'cikm2018_rsc15_xe': (cikm_row('cross-entropy', 'softmax', False, 0.3, 0.1, 0.7, logq=0),
                          '0.7180', '0.3087'),
    'rsc15_xe_authors': (dict(
        loss='cross-entropy', final_act='softmax', constrained_embedding=True, layers=(100,),
        batch_size=32, dropout_p_embed=0, dropout_p_hidden=0.4, learning_rate=0.2, momentum=0.2,
        n_sample=2048, sample_alpha=0.5, logq=1, n_epochs=10), None, None),
    'yoochoose1_64_xe_tuned': (dict(  # tuned here with gru4rec-tune, not published
        loss='cross-entropy', final_act='softmax', constrained_embedding=True, n_sample=2048, logq=1.0,
        layers=(224,), batch_size=128, dropout_p_embed=0.15, dropout_p_hidden=0.25,
        learning_rate=0.045795052205352384, momentum=0.15, sample_alpha=0.1, n_epochs=14), None, None),
    'yoochoose1_64_xe_tuned_recall': (dict(  # tuned here with gru4rec-tune, not published
        loss='cross-entropy', final_act='softmax', constrained_embedding=True, n_sample=2048, logq=1.0,
        layers=(224,), batch_size=128, dropout_p_embed=0.35, dropout_p_hidden=0.3,
        learning_rate=0.0393650100013, momentum=0.25, sample_alpha=0.3, n_epochs=12), None, None),
    'yoochoose1_64_xe_tuned_smoothing': (dict(  # tuned here (label smoothing, width), not published
        loss='cross-entropy', final_act='softmax', constrained_embedding=True, n_sample=2048, logq=1.0,
        layers=(288,), batch_size=128, dropout_p_embed=0.35, dropout_p_hidden=0.3,
        learning_rate=0.0393650100013, momentum=0.25, sample_alpha=0.3, smoothing=0.2, n_epochs=10), None, None),
    'diginetica_bprmax_tuned': (dict(  # tuned here (n_sample and epochs on validation), not published
        loss='bpr-max', final_act='elu-1', constrained_embedding=True, embedding=0, layers=(512,),
        batch_size=128, dropout_p_embed=0.5, dropout_p_hidden=0.3, learning_rate=0.05, momentum=0.15,
        n_sample=4096, sample_alpha=0.3, bpreg=0.9, logq=0.0, n_epochs=9), None, None),
}


def test_every_paramfile_is_checked():
    assert sorted(p.stem for p in PARAMFILES.glob('*')) == sorted(PUBLISHED)


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_paramfile_matches_spec(name):
    expected, recall, mrr = PUBLISHED[name]
    path = PARAMFILES / f'{name}.txt'
    params = read_param_file(path, DEFAULTS)
    assert params == expected
    for key, value in params.items():  # typed like the defaults (0 in the table is 0.0 here)
        assert DEFAULTS[key] is None or type(value) is type(DEFAULTS[key]), key
    text = path.read_text()
    assert text.startswith('# ')  # a header saying where the numbers come from
    if recall is not None:
        assert f'Recall@20 {recall}, MRR@20 {mrr}' in text


def test_defaults_match_the_model():
    gru4rec = pytest.importorskip('gru4rec')
    assert gru4rec.GRU4Rec().get_params() == DEFAULTS


def test_steps_per_call_is_an_int_or_none():
    assert parse_param_string("steps_per_call=16", DEFAULTS) == {"steps_per_call": 16}
    assert parse_param_string("steps_per_call=None", DEFAULTS) == {"steps_per_call": None}
    with pytest.raises(ValueError, match="steps_per_call"):
        parse_param_string("steps_per_call=fast", DEFAULTS)
