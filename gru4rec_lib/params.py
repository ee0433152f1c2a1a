"""Parameter strings and parameter files for the command line.

Two spellings of the same ``name=value`` items:

- a parameter string, items separated by commas::

      loss=bpr-max,final_act=elu-0.5,layers=100/100,constrained_embedding=True

- a parameter file (``paramfiles/*.txt``), one item per line, ``#`` starts a comment::

      # RSC15, cross-entropy, shared embedding
      loss=cross-entropy
      layers=100

Blank items (trailing commas, empty lines) are skipped; spaces around names and values are
ignored. The result holds only the parameters given, typed, in the order given; pass it to
``GRU4Rec(**params)`` or ``set_params(**params)``.

Types follow ``defaults`` (the model's ``get_params()``), the value's type there deciding:

==============  ===========================================================================
default         accepted text
==============  ===========================================================================
bool            ``true``/``false``/``1``/``0`` (any case)
int             an integer: ``2048``
float           a finite number: ``0.05``, ``1e-3``, ``1``
tuple / list    ``/``-separated integers: ``100`` -> ``(100,)``, ``100/100`` -> ``(100, 100)``
str             the text as is
None            ``None``/``null`` (any case) -> None, anything else -> the text
==============  ===========================================================================

Parameters taking several types are handled by name, whatever their default:

- ``embedding``: an integer or ``layersize``;
- ``seed``: an integer or ``None``;
- ``adapt``: an optimiser name, or ``None``/``null`` for plain SGD;
- ``adapt_params``: optimiser constants as ``decay:0.9/epsilon:1e-6`` -> ``{'decay': 0.9,
  'epsilon': 1e-06}`` (values are floats), ``{}`` for an empty dict, or ``None``;
- ``device``: a device name or ``None``;
- ``session_key``, ``user_key``: a column name or ``None``.

Every problem raises ``ValueError``: an unknown name (with close matches), a value that does not
read as the expected type (naming parameter, value and type), a name given twice, an item
without ``=``, an empty value.

The reference implementations' files and names are accepted as they are:

- a parameter file ending in ``.py`` is read in their format, one assignment
  ``gru4rec_params = OrderedDict([('loss', 'bpr-max'), ('layers', [100]), ...])`` (or a dict
  literal), after ``from collections import OrderedDict``. The file is parsed as data (Python's
  ``ast``), never run: any other statement, or a value that is not a literal, is an error;
- ``elu_param=X`` (the PyTorch port) is ``final_act=elu-X`` (``linear`` for 0) with losses other
  than cross-entropy; with cross-entropy (and xe_logit) it is dropped, as the port ignores it there;
- ``adapt_params`` as a list of numbers (the Theano version: ``0.9`` or ``[0.9, 0.999]``) is named
  by the optimiser: rmsprop/adadelta ``[decay]``, adam ``[beta1, beta2]``; ``[]`` is None;
- ``sample_cache_max_size`` (the PyTorch port's name) is ``sample_store``;
- device names ``cuda:0``, ``cuda0``, ``gpu0`` mean ``gpu`` (the first GPU).

Names of theirs with no counterpart here (``compatibility_mode``, ``store_type``) raise an error
that says why.
"""
import ast
import difflib
import logging
import math
from pathlib import Path

__all__ = ['parse_param_string', 'read_param_file', 'format_param_file', 'bundled_file', 'bundled_names',
           'device_name', 'literal_text', 'read_elu_param']

logger = logging.getLogger(__name__)

BUNDLED = Path(__file__).resolve().parent  # paramfiles/ and paramspaces/ ship inside the package

NONE_WORDS = ('none', 'null')
TRUE_WORDS = ('true', '1')
FALSE_WORDS = ('false', '0')


# --- readers for one value; each raises ValueError on text it cannot read ---

def _to_bool(text):
    lowered = text.lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ValueError(text)


def _to_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _to_int_tuple(text):
    return tuple(int(part) for part in text.split('/'))


def _is_none(text):
    return text.lower() in NONE_WORDS


def _to_dict(text):
    if text == '{}':
        return {}
    result = {}
    for part in text.split('/'):
        key, sep, value = part.partition(':')
        key = key.strip()
        if not sep or not key or key in result:
            raise ValueError(text)
        result[key] = _to_float(value.strip())
    return result


def _or_none(reader):
    return lambda text: None if _is_none(text) else reader(text)


class ExplainedValueError(ValueError):
    """A reader's error whose own message says more than 'cannot read ... as ...'."""


def _embedding(text):
    return 'layersize' if text.lower() == 'layersize' else int(text)


def device_name(text):
    """'gpu' for the reference's spellings of the first GPU: 'cuda:0', 'cuda0', 'gpu0', 'gpu:0'.

    Other names pass through unchanged (the model's device check names what it accepts); a GPU
    other than the first raises ValueError: select it with CUDA_VISIBLE_DEVICES instead.
    """
    lowered = text.strip().lower()
    for prefix in ('cuda:', 'cuda', 'gpu:', 'gpu'):
        if lowered.startswith(prefix) and lowered[len(prefix):].isdigit():
            if int(lowered[len(prefix):]) != 0:
                raise ExplainedValueError(f'device {text!r}: only the first GPU is addressed by name; choose another '
                                 f'one with CUDA_VISIBLE_DEVICES={lowered[len(prefix):]} and device gpu')
            return 'gpu'
    return text


# (reader, description of what it expects) by parameter name, then by the default's type.
BY_NAME = {
    'embedding': (_embedding, "an integer or 'layersize'"),
    'seed': (_or_none(int), 'an integer or None'),
    'adapt': (_or_none(str), 'an optimiser name or None'),
    'adapt_params': (_or_none(_to_dict), "name:value pairs separated by '/', {} or None"),
    'device': (_or_none(device_name), 'a device name or None'),
    'steps_per_call': (_or_none(int), 'an integer or None'),
    'session_key': (_or_none(str), 'a column name or None'),
    'user_key': (_or_none(str), 'a column name or None'),
}
BY_TYPE = {
    bool: (_to_bool, 'a boolean (true/false/1/0)'),
    int: (int, 'an integer'),
    float: (_to_float, 'a finite number'),
    tuple: (_to_int_tuple, "integers separated by '/'"),
    list: (lambda text: list(_to_int_tuple(text)), "integers separated by '/'"),
    str: (str, 'a string'),
    type(None): (_or_none(str), 'a string or None'),
    dict: (_to_dict, "name:value pairs separated by '/'"),
}


def parse_value(name, text, default):
    """Read ``text`` as the value of parameter ``name`` whose default is ``default``."""
    if name in BY_NAME:
        reader, expected = BY_NAME[name]
    elif type(default) in BY_TYPE:
        reader, expected = BY_TYPE[type(default)]
    else:
        raise ValueError(f'parameter {name!r}: no reader for values of type '
                         f'{type(default).__name__} (default {default!r})')
    try:
        return reader(text)
    except ExplainedValueError as err:
        raise ValueError(f'parameter {name!r}: {err}') from None
    except ValueError:
        raise ValueError(f'parameter {name!r}: cannot read {text!r} as {expected}') from None


# --- the reference implementations' names ---

RENAMED = {'sample_cache_max_size': 'sample_store'}  # the PyTorch port's fit argument
NO_EQUIVALENT = {
    'compatibility_mode': 'the PyTorch port\'s switch for its numpy-ordered weight initialisation; '
                          'the initialisation here always follows the Theano version',
    'store_type': 'where the Theano version keeps its sample store; here it lives on the compute device',
    'sample_store_on_cpu': 'where the Theano version keeps its sample store; here it lives on the compute '
                           'device',
}
ADAPT_LIST_NAMES = {'rmsprop': ('decay',), 'adadelta': ('decay',), 'adam': ('beta1', 'beta2'),
                    'adagrad': (), None: ()}  # the Theano version's positional adapt_params
AUTHORS_ONLY = ('elu_param',)  # the PyTorch port's names read here, turned into ours by _translate


def read_elu_param(text):
    """The PyTorch port's elu_param as a number >= 0 (0: no ELU, i.e. linear scores)."""
    try:
        value = _to_float(text)
    except ValueError:
        raise ValueError(f"parameter 'elu_param': cannot read {text!r} as a number") from None
    if value < 0:
        raise ValueError(f"parameter 'elu_param': expected a number >= 0 (0: linear), got {text!r}")
    return value


def _elu_final_act(text, params, defaults):
    """The PyTorch port's elu_param as our final_act; None where the port ignores it."""
    value = read_elu_param(text)
    if 'final_act' in params:
        raise ValueError('give either final_act or elu_param (the PyTorch port\'s name for elu-X), not both')
    loss = params.get('loss', defaults.get('loss'))
    if loss in ('cross-entropy', 'xe_logit'):
        logger.info('elu_param=%s ignored with loss=%r (the PyTorch port applies it to bpr-max only)', text, loss)
        return None
    return f'elu-{value:g}' if value > 0 else 'linear'


def _adapt_params_list(text, params, defaults):
    """The Theano version's adapt_params, '0.9' or '0.9/0.999', named by the optimiser."""
    adapt = params.get('adapt', defaults.get('adapt'))
    names = ADAPT_LIST_NAMES.get(adapt)
    try:
        values = [_to_float(part) for part in text.split('/')]
    except ValueError:
        raise ValueError(f"parameter 'adapt_params': cannot read {text!r} as name:value pairs separated "
                         "by '/', numbers separated by '/', {} or None") from None
    if names is None or len(values) != len(names):
        takes = f"takes {len(names)} values ({'/'.join(names)})" if names else 'takes no values'
        raise ValueError(f"parameter 'adapt_params': adapt={adapt!r} {takes}, got {len(values)}: {text!r}")
    return dict(zip(names, values))


def _is_number_list(text):
    """'0.9' or '0.9/0.999' (the Theano version's adapt_params), not 'decay:0.9', '{}' or 'None'."""
    return bool(text) and ':' not in text and text != '{}' and not _is_none(text)


def _located(where, function, *args):
    """``function(*args)``, its ValueError prefixed with the item's location."""
    try:
        return function(*args)
    except ValueError as err:
        raise ValueError(f'{where}: {err}') from None


def _translate(raw, defaults):
    """raw: name -> (where, text), the reference's names included -> our typed parameters, in order.

    elu_param and a positional adapt_params depend on other items (loss, adapt), which may come
    later: they are resolved after the others, in the place they were given.
    """
    params, deferred = {}, []
    for name, (where, text) in raw.items():
        if name == 'elu_param' or (name == 'adapt_params' and _is_number_list(text)):
            params[name] = None  # a placeholder that keeps the order
            deferred.append(name)
        else:
            params[name] = _located(where, parse_value, name, text, defaults[name])
    for name in deferred:
        where, text = raw[name]
        others = {key: value for key, value in params.items() if key != name}
        if name == 'adapt_params':
            params[name] = _located(where, _adapt_params_list, text, others, defaults)
            continue
        final_act = _located(where, _elu_final_act, text, others, defaults)
        params = {('final_act' if key == name else key): (final_act if key == name else value)
                  for key, value in params.items() if key != name or final_act is not None}
    return params


def _check_name(name, defaults, raw):
    """Our name for ``name`` (renamed ones mapped); ValueError for unknown or repeated names."""
    name = RENAMED.get(name, name) if name not in defaults else name
    if name in NO_EQUIVALENT and name not in defaults:
        raise ValueError(f'parameter {name!r} of the reference implementation has no equivalent here: '
                         f'{NO_EQUIVALENT[name]}; remove it')
    if name not in defaults and not (name in AUTHORS_ONLY and 'final_act' in defaults):
        raise ValueError(_unknown_name_message(name, defaults))
    if name in raw:
        raise ValueError(f'parameter {name!r} is given more than once')
    return name


# --- reading items ---

def _unknown_name_message(name, known):
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return f'unknown parameter {name!r}; close matches: {", ".join(close)}'
    return f'unknown parameter {name!r}; known parameters: {", ".join(sorted(known))}'


def _parse_items(items, defaults):
    """``items``: (location, 'name=value' text) pairs; location prefixes error messages."""
    raw = {}
    for where, item in items:
        item = item.strip()
        if not item:
            continue
        name, sep, text = (part.strip() for part in item.partition('='))
        try:
            if not sep or not name:
                raise ValueError(f'expected name=value, got {item!r}')
            name = _check_name(name, defaults, raw)
            if not text:
                raise ValueError(f'parameter {name!r} has an empty value')
        except ValueError as err:
            raise ValueError(f'{where}: {err}') from None
        raw[name] = (where, text)
    return _translate(raw, defaults)


def parse_param_string(text, defaults):
    """Parse ``'name=value,name=value'`` into a typed dict, types driven by ``defaults``.

    >>> parse_param_string('loss=bpr-max,layers=100/100,dropout_p_hidden=0.1,',
    ...                    {'loss': 'bpr-max', 'layers': (100,), 'dropout_p_hidden': 0.0})
    {'loss': 'bpr-max', 'layers': (100, 100), 'dropout_p_hidden': 0.1}
    """
    return _parse_items((('parameter string', item) for item in text.split(',')), defaults)


def read_param_file(path, defaults):
    """Read a parameter file into a typed dict.

    ``NAME.py``: the reference implementations' format (``gru4rec_params = OrderedDict([...])``),
    read as data and never run; any other name: one ``name=value`` per line, ``#`` comments.
    """
    with open(path, encoding='utf-8') as file:
        text = file.read()
    if str(path).endswith('.py'):
        return _parse_items(_python_items(text, path), defaults)
    return _parse_items(((f'{path}, line {number}', line.partition('#')[0])
                         for number, line in enumerate(text.splitlines(), 1)), defaults)


# --- the reference implementations' Python parameter files, read as data ---

PARAMS_VARIABLE = 'gru4rec_params'
PYTHON_SHAPE = (f"only 'from collections import OrderedDict' and one assignment "
                f"'{PARAMS_VARIABLE} = OrderedDict([(name, value), ...])' or a dict literal are read; "
                "the file is parsed as data, never run")


def _allowed_statement(node):
    """Imports of OrderedDict and docstrings may stand beside the one assignment."""
    if isinstance(node, ast.ImportFrom):
        return node.module == 'collections'
    if isinstance(node, ast.Import):
        return all(alias.name == 'collections' for alias in node.names)
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _is_params_assignment(node):
    return (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == PARAMS_VARIABLE)


def _pair_nodes(value, where):
    """The (name node, value node) pairs of OrderedDict([...]) / dict([...]) / {...}."""
    if isinstance(value, ast.Dict):
        return list(zip(value.keys, value.values))
    func = getattr(value, 'func', None)
    called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if (isinstance(value, ast.Call) and called in ('OrderedDict', 'dict') and not value.keywords
            and len(value.args) <= 1):
        if not value.args:
            return []
        if isinstance(value.args[0], (ast.List, ast.Tuple)):
            pairs = []
            for element in value.args[0].elts:
                if not isinstance(element, (ast.Tuple, ast.List)) or len(element.elts) != 2:
                    raise ValueError(f'{where}, line {element.lineno}: expected (name, value) pairs')
                pairs.append(tuple(element.elts))
            return pairs
        if isinstance(value.args[0], ast.Dict):
            return _pair_nodes(value.args[0], where)
    raise ValueError(f'{where}, line {value.lineno}: {PYTHON_SHAPE}')


def _literal(node, where, what):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(f'{where}, line {node.lineno}: {what} must be a literal (a number, string, True, '
                         f'False, None or a list of them), got {ast.unparse(node)!r}') from None


def literal_text(name, value):
    """A literal from a Python parameter file as the text the readers above take."""
    if value is None or isinstance(value, (bool, int, str)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        if not value:
            return 'None' if name == 'adapt_params' else ''
        if all(isinstance(part, (int, float)) and not isinstance(part, bool) for part in value):
            return '/'.join(literal_text(name, part) for part in value)
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return '/'.join(f'{key}:{part!r}' for key, part in value.items()) if value else '{}'
    raise ValueError(f'parameter {name!r}: cannot read {value!r} (a {type(value).__name__})')


def _python_items(text, path):
    """(location, 'name=value') items of a Python parameter file, checked to be data only."""
    where = str(path)
    try:
        module = ast.parse(text, filename=where)
    except SyntaxError as err:
        raise ValueError(f'{where}, line {err.lineno}: not valid Python ({err.msg}); {PYTHON_SHAPE}') from None
    assignments = [node for node in module.body if _is_params_assignment(node)]
    for node in module.body:
        if not _allowed_statement(node) and not _is_params_assignment(node):
            raise ValueError(f'{where}, line {node.lineno}: {PYTHON_SHAPE}')
    if len(assignments) != 1:
        raise ValueError(f'{where}: expected one assignment to {PARAMS_VARIABLE}, found {len(assignments)}; '
                         f'{PYTHON_SHAPE}')
    items = []
    for key_node, value_node in _pair_nodes(assignments[0].value, where):
        location = f'{where}, line {key_node.lineno}'
        name = _literal(key_node, where, 'a parameter name')
        if not isinstance(name, str):
            raise ValueError(f'{location}: parameter names must be strings, got {name!r}')
        value = _literal(value_node, where, f'the value of {name!r}')
        try:
            items.append((location, f'{name}={literal_text(name, value)}'))
        except ValueError as err:
            raise ValueError(f'{location}: {err}') from None
    return items


# --- bundled files ---

def bundled_names(folder):
    """Names of the files shipped in ``folder`` ('paramfiles' or 'paramspaces'), without '.txt'."""
    return sorted(path.stem for path in (BUNDLED / folder).glob('*.txt'))


def bundled_file(name_or_path, folder):
    """A path as given if it names a file, else the bundled ``folder/NAME.txt`` (``-pf rsc15_xe``).

    So ``-pf paramfiles/rsc15_xe.txt`` works from a checkout and ``-pf rsc15_xe`` anywhere after
    install. Raises ValueError naming the bundled files when neither exists.
    """
    path = Path(name_or_path)
    if path.is_file():
        return str(path)
    stem = path.name[:-4] if path.name.endswith('.txt') else path.name
    if path.parent == Path('.') or path.parent.name == folder:
        bundled = BUNDLED / folder / f'{stem}.txt'
        if bundled.is_file():
            return str(bundled)
    raise ValueError(f'{name_or_path}: no such file, and no bundled {folder} file of that name '
                     f'(bundled: {", ".join(bundled_names(folder))})')


# --- writing ---

def _plain(value):
    """numpy scalars (as tuners return them) -> the Python value."""
    if type(value).__module__ == 'numpy' and getattr(value, 'ndim', None) == 0:
        return value.item()
    return value


def _format_float(name, value):
    if not math.isfinite(value):
        raise ValueError(f'parameter {name!r}: {value!r} cannot be written (not finite)')
    return repr(float(value))


def _format_value(name, value):
    value = _plain(value)
    if value is None:
        return 'None'
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _format_float(name, value)
    if isinstance(value, (tuple, list)):
        parts = [_plain(part) for part in value]
        if not parts or not all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
            raise ValueError(f'parameter {name!r}: only non-empty lists of integers can be '
                             f'written, got {value!r}')
        return '/'.join(str(part) for part in parts)
    if isinstance(value, dict):
        if not value:
            return '{}'
        if not all(isinstance(key, str) and key and not set(key) & set(':/#=\n') for key in value):
            raise ValueError(f'parameter {name!r}: dict keys must be names without : / # =')
        return '/'.join(f'{key}:{_format_float(name, float(_plain(v)))}' for key, v in value.items())
    if isinstance(value, str):
        if not value or value != value.strip() or set(value) & set('#\n\r'):
            raise ValueError(f'parameter {name!r}: the string {value!r} cannot be written '
                             '(empty, padded with spaces, or containing # or a line break)')
        return value
    raise ValueError(f'parameter {name!r}: values of type {type(value).__name__} cannot be written')


def format_param_file(params, comment=None):
    """Write ``params`` in the parameter-file format (read back by :func:`read_param_file`).

    ``comment`` (optional, may span lines) becomes ``#`` lines at the top.

    >>> print(format_param_file({'loss': 'cross-entropy', 'layers': (100,), 'logq': 1.0}), end='')
    loss=cross-entropy
    layers=100
    logq=1.0
    """
    lines = [f'# {line}'.rstrip() for line in comment.splitlines()] if comment else []
    for name, value in params.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f'parameter name {name!r} cannot be written')
        lines.append(f'{name}={_format_value(name, value)}')
    return '\n'.join(lines) + '\n'
