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
    """Item ids as an array numpy can store without pickle (ints or strings)."""
    ids = np.asarray(ids)
    if ids.dtype != object:
        return ids
    if all(isinstance(i, str) for i in ids):
        return ids.astype(str)
    if all(isinstance(i, (int, np.integer)) for i in ids):
        return ids.astype(np.int64)
    raise ValueError("save needs item ids that are all ints or all strings (found mixed types)")
