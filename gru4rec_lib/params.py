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
"""
import difflib
import math
from pathlib import Path

__all__ = ['parse_param_string', 'read_param_file', 'format_param_file', 'bundled_file', 'bundled_names']

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


def _embedding(text):
    return 'layersize' if text.lower() == 'layersize' else int(text)


# (reader, description of what it expects) by parameter name, then by the default's type.
BY_NAME = {
    'embedding': (_embedding, "an integer or 'layersize'"),
    'seed': (_or_none(int), 'an integer or None'),
    'adapt': (_or_none(str), 'an optimiser name or None'),
    'adapt_params': (_or_none(_to_dict), "name:value pairs separated by '/', {} or None"),
    'device': (_or_none(str), 'a device name or None'),
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
    except ValueError:
        raise ValueError(f'parameter {name!r}: cannot read {text!r} as {expected}') from None


# --- reading items ---

def _unknown_name_message(name, known):
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return f'unknown parameter {name!r}; close matches: {", ".join(close)}'
    return f'unknown parameter {name!r}; known parameters: {", ".join(sorted(known))}'


def _parse_items(items, defaults):
    """``items``: (location, 'name=value' text) pairs; location prefixes error messages."""
    params = {}
    for where, item in items:
        item = item.strip()
        if not item:
            continue
        name, sep, text = (part.strip() for part in item.partition('='))
        try:
            if not sep or not name:
                raise ValueError(f'expected name=value, got {item!r}')
            if name not in defaults:
                raise ValueError(_unknown_name_message(name, defaults))
            if name in params:
                raise ValueError(f'parameter {name!r} is given more than once')
            if not text:
                raise ValueError(f'parameter {name!r} has an empty value')
            params[name] = parse_value(name, text, defaults[name])
        except ValueError as err:
            raise ValueError(f'{where}: {err}') from None
    return params


def parse_param_string(text, defaults):
    """Parse ``'name=value,name=value'`` into a typed dict, types driven by ``defaults``.

    >>> parse_param_string('loss=bpr-max,layers=100/100,dropout_p_hidden=0.1,',
    ...                    {'loss': 'bpr-max', 'layers': (100,), 'dropout_p_hidden': 0.0})
    {'loss': 'bpr-max', 'layers': (100, 100), 'dropout_p_hidden': 0.1}
    """
    return _parse_items((('parameter string', item) for item in text.split(',')), defaults)


def read_param_file(path, defaults):
    """Read a parameter file (one ``name=value`` per line, ``#`` comments) into a typed dict."""
    with open(path, encoding='utf-8') as file:
        lines = file.read().splitlines()
    return _parse_items(((f'{path}, line {number}', line.partition('#')[0])
                         for number, line in enumerate(lines, 1)), defaults)


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
