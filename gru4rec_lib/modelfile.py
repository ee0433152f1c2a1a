"""The model file of `GRU4Rec.save` / `GRU4Rec.load`: one ``.npz`` archive, no pickle.

Arrays: ``format_version`` (int), ``params_json`` (the constructor parameters as JSON),
``library_version``, ``item_ids`` (ints or strings), ``support`` (item supports for sampling),
``epoch_losses`` and ``state/NAME`` for every weight, optimiser state and the step counter
(`GRU4Rec.state_dict`). Written to a temporary file in the target folder, then renamed over the
target; read with ``allow_pickle=False`` and checked before any model is built.
"""
import contextlib
import json
import os
import tempfile

import numpy as np
import pandas as pd

FORMAT_VERSION = 1


def json_scalar(value):
    """numpy scalars, which the parameter checks accept (e.g. seed=np.int64(3)), as JSON numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot save the parameter value {value!r} ({type(value).__name__}) as JSON")


def checked_state(expected, state):
    """float32 copies of `state` after checking names, shapes, dtypes and finiteness against `expected`."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict of arrays, got {type(state).__name__}")
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing:
        raise ValueError(f"state arrays missing: {missing}")
    if extra:
        raise ValueError(f"unexpected state arrays for these parameters: {extra}")
    arrays = {}
    for name, shape in expected.items():
        value = np.asarray(state[name])
        if value.shape != tuple(shape):
            raise ValueError(f"state {name!r} has shape {value.shape}, expected {tuple(shape)} (from the "
                             "parameters and the number of item ids)")
        if value.dtype != np.float32:
            raise ValueError(f"state {name!r} has dtype {value.dtype}, expected float32")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"state {name!r} is not finite (NaN or inf)")
        arrays[name] = value.copy()
    return arrays


def atomic_savez(path, arrays):
    """np.savez into a temporary file in the target's folder, then rename it over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save the model to {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot save the model to {path}: it is a directory")
    return atomic_write(path, lambda f: np.savez(f, **arrays), "the model")


def atomic_write(path, write, what="a file"):
    """Call write(binary file) on a temporary file in `path`'s folder, then rename it over `path`.

    The file gets the permissions a new file gets (the umask's), or those of the file it replaces;
    a failure leaves no temporary file, `path` as it was, and an OSError naming `path`.
    """
    temporary = None
    try:
        mode = os.stat(path).st_mode & 0o7777 if os.path.isfile(path) else 0o666 & ~_umask()
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, mode)  # mkstemp's file is private to its owner
        os.replace(temporary, path)
    except BaseException as err:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        if isinstance(err, OSError):  # name the user's path, not the temporary file
            raise type(err)(err.errno, f"cannot save {what} to {path}: {err.strerror or err}") from err
        raise
    return path


def _umask():
    """The process's umask, read without changing it where Linux tells it (os.umask sets it too)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_npz(path):
    """Every array of an ``.npz`` file, read without pickle; ValueError if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise ValueError("a single array, not an .npz archive")
            return {key: f[key] for key in f.files}
    except FileNotFoundError:
        raise
    except Exception as err:  # BadZipFile, EOFError, zlib errors, numpy's pickle refusal, ...
        reason = ("it holds pickled data, which gru4rec never loads" if "pickle" in str(err) else
                  f"unreadable as an .npz archive: {type(err).__name__}")
        raise ValueError(f"not a gru4rec model file: {path} ({reason})") from None


def file_params(arrays):
    """The format version check and the parameters of a saved model (ValueError naming the problem)."""
    for key in ("format_version", "params_json"):
        if key not in arrays:
            raise ValueError(f"missing array {key!r}")
    version = arrays["format_version"]
    if version.shape != () or version.dtype.kind not in "iu":
        raise ValueError(f"format_version {version!r} is not an integer")
    if not 1 <= int(version) <= FORMAT_VERSION:
        raise ValueError(f"format_version {int(version)}: this gru4rec reads versions 1 to {FORMAT_VERSION}")
    text = arrays["params_json"]
    try:
        params = json.loads(str(text)) if text.shape == () and text.dtype.kind == "U" else None
    except json.JSONDecodeError as err:
        raise ValueError(f"params_json is not valid JSON ({err})") from None
    if not isinstance(params, dict):
        raise ValueError("params_json is not a JSON object of parameters")
    if isinstance(params.get("layers"), list):
        params["layers"] = tuple(params["layers"])
    return params


def portable_ids(ids):
    """Item ids as an array numpy stores without pickle: ints, floats, bools or strings, one kind.

    ValueError for ids of several kinds (4 and '4'), of another kind (bytes, tuples, dates) or
    non-finite floats: `fit` checks its ids with this, so that every fitted model can be saved.
    """
    # a list through pandas: np.asarray([1, "a"]) would turn 1 into the string '1'
    ids = ids if isinstance(ids, np.ndarray) else np.asarray(pd.Index(list(ids)).to_numpy())
    if ids.dtype != object:
        if ids.dtype.kind not in "iufbU":
            raise ValueError(f"item ids of dtype {ids.dtype} cannot be stored: use ints or strings")
        if ids.dtype.kind == "f" and not np.all(np.isfinite(ids)):
            raise ValueError("item ids include NaN or inf")
        return ids
    kinds = {"str" if isinstance(i, str) else "int" if isinstance(i, (int, np.integer)) and not isinstance(
        i, (bool, np.bool_)) else "float" if isinstance(i, (float, np.floating)) else type(i).__name__ for i in ids}
    if kinds == {"str"}:
        return ids.astype(str)
    if kinds == {"float"}:
        return portable_ids(ids.astype(np.float64))
    if kinds == {"int"}:
        for dtype in (np.int64, np.uint64):
            with contextlib.suppress(OverflowError):
                return ids.astype(dtype)
        raise ValueError("item ids from below 0 to above 2**63 - 1 fit no 64-bit integer type")
    raise ValueError(f"item ids of the kinds {sorted(kinds)} cannot be stored: convert them to one kind, "
                     "ints or strings (e.g. events[item_key].astype(str))")