"""Compiled programs kept on disk, so that a later fit or evaluation skips PyTensor's graph rewriting.

JAX's persistent compilation cache keeps XLA's machine code, but each fit still builds and
rewrites its PyTensor graph (about a second on a CPU, the largest part of a warm start). Here a
function's JAX program, as PyTensor compiled it, is exported (`jax.export`: StableHLO, serialised
as data; loading it runs no code of the file) into the compilation cache folder, named by a
fingerprint of the graph before rewriting. A later compile of an equal graph loads it and runs
it directly: the same program, so the same numbers, and XLA finds its machine code in the cache.

The fingerprint covers every operation with its properties, every constant's bytes, every
variable's type, the shared variables' names, and the versions of PyTensor, JAX and this
package (its source files' contents), so a changed graph or library never loads an old program.
A file that fails to load is ignored (the function is compiled as usual) and replaced.
"""
import functools
import hashlib
import json
import logging
import os
import tempfile
import warnings
import weakref
from pathlib import Path

import numpy as np
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant
from pytensor.graph.fg import FunctionGraph
from pytensor.graph.traversal import graph_inputs, toposort

logger = logging.getLogger(__name__)
FORMAT = 1
SUFFIX = ".gru4rec-program"


_RNG_CELLS = weakref.WeakKeyDictionary()  # RandomType shared variable -> the state cell its programs share


def _rng_cell(var, found=None):
    """The one cell holding the state of RandomType shared variable `var` for every `Program` that
    uses it: PyTensor's JAX linker gives each function a copy of the state (two functions drawing
    from one generator would repeat each other's numbers); programs share it, as they share every
    other shared variable's storage. `found`: the cell to register when there is none yet."""
    cell = _RNG_CELLS.get(var)
    if cell is None:
        if found is None:
            from pytensor.link.jax.dispatch import jax_typify

            found = [jax_typify(var.get_value(borrow=False))]
        cell = _RNG_CELLS[var] = found
    return cell


class Uncacheable(Exception):
    """The graph holds something without a stable description: compile it as usual."""


@functools.lru_cache(maxsize=1)
def _package_digest():
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted([*root.glob("*.py"), root.parent / "gru4rec.py"]):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _versions():
    import jax
    import jaxlib
    import pytensor

    flags = {name: getattr(pytensor.config, name, None)  # settings that change PyTensor's rewriting
             for name in ("floatX", "optimizer", "optimizer_excluding", "optimizer_including", "optimizer_requiring")}
    return (f"format {FORMAT}; pytensor {pytensor.__version__}; jax {jax.__version__}; jaxlib {jaxlib.__version__}; "
            f"flags {sorted(flags.items())}")


def _describe_value(value, inner):
    """A stable text for an operation's property (an Op or graph described recursively)."""
    if isinstance(value, FunctionGraph):
        return inner(value.inputs, value.outputs)
    if hasattr(value, "make_node") or hasattr(value, "impl"):  # an Op or a scalar Op
        return _describe_op(value, inner)
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(_describe_value(v, inner) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k!r}:{_describe_value(v, inner)}" for k, v in sorted(value.items(), key=str)) + "}"
    if isinstance(value, np.ndarray):
        return f"array({value.dtype},{value.shape},{hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()})"
    text = repr(value)
    if " at 0x" in text:
        raise Uncacheable(text)
    return text


def _describe_op(op, inner):
    kind = f"{type(op).__module__}.{type(op).__qualname__}"
    props = getattr(op, "__props__", None)
    if props is not None:
        parts = [f"{name}={_describe_value(getattr(op, name), inner)}" for name in props]
    else:  # Scan and other ops that define equality themselves
        parts = [f"{name}={_describe_value(getattr(op, name), inner)}"
                 for name in ("info", "truncate_gradient", "name", "allow_gc", "profile") if hasattr(op, name)]
        if not parts and not isinstance(getattr(op, "fgraph", None), FunctionGraph):
            raise Uncacheable(kind)
    fgraph = getattr(op, "fgraph", None)
    if isinstance(fgraph, FunctionGraph):
        parts.append("inner=" + inner(fgraph.inputs, fgraph.outputs))
    return kind + "[" + ";".join(parts) + "]"


def _describe_graph(inputs, outputs):
    """Text of a graph: its root variables, then every node in topological order."""
    names, lines = {}, []

    def name_of(var):
        if var not in names:
            names[var] = f"v{len(names)}"
            if var.owner is None:
                lines.append(f"{names[var]} = {_describe_root(var, inputs)}")
        return names[var]

    for node in toposort(outputs, blockers=inputs):
        args = ",".join(name_of(v) for v in node.inputs)
        outs = []
        for out in node.outputs:
            names[out] = f"v{len(names)}"
            outs.append(f"{names[out]}:{out.type}")
        lines.append(f"{','.join(outs)} = {_describe_op(node.op, _describe_graph)}({args})")
    lines.append("out " + ",".join(name_of(v) for v in outputs))
    return "\n".join(lines)


def _describe_root(var, inputs):
    if isinstance(var, Constant):
        data = np.asarray(var.data)
        return f"const {var.type} {_describe_value(data, None)}"
    if isinstance(var, SharedVariable):
        return f"shared {var.name!r} {var.type}"
    for position, inp in enumerate(inputs):
        if var is inp:
            return f"input {position} {var.type}"
    raise Uncacheable(f"root variable {var} is neither an input, a constant nor shared")


def fingerprint(inputs, outputs, updates, donate, repeat=1, after=()):
    """Hex digest naming the program of ``pytensor.function(inputs, outputs, updates=updates)``,
    run `repeat` times per call, then computing `after` from the updated values (`from_function`)."""
    dynamic = [var.name for var in inputs if None in getattr(var.type, "shape", (None,))]
    if dynamic:  # an exported program has the shapes it was exported with
        raise Uncacheable(f"inputs without a static shape: {dynamic}")
    outputs = (list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]) + list(after)
    pairs = list(updates.items()) if updates else []
    roots = outputs + [value for _, value in pairs]
    text = _describe_graph(list(inputs), roots)
    text += "\nupdates " + ";".join(f"{var.name!r}<-{i}" for i, (var, _) in enumerate(pairs))
    held = platforms(var.container.storage[0] for var in shared_variables(inputs, outputs, updates).values())
    if len(held) > 1:  # an export for several platforms would take the platform as an extra argument
        raise Uncacheable(f"state on several platforms: {held}")
    text += f"\nplatforms {held}"  # a program runs where it was made
    text += f"\ndonate {donate}\n{_versions()}\npackage {_package_digest()}"
    if repeat != 1:
        text += f"\nrepeat {repeat}"
    if after:
        text += f"\nafter {len(after)}"
    return hashlib.sha256(text.encode()).hexdigest()


def shared_variables(inputs, outputs, updates):
    """The graph's shared variables by name; Uncacheable when a name is missing or repeated."""
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    roots = outputs + list((updates or {}).values()) + list((updates or {}).keys())
    found = {}
    for var in graph_inputs(roots):
        if isinstance(var, SharedVariable):
            if not var.name or found.get(var.name, var) is not var:
                raise Uncacheable(f"shared variable name {var.name!r} is not unique")
            found[var.name] = var
    return found


class Program:
    """A compiled function run as an exported JAX program, with PyTensor's calling convention:
    called with the explicit inputs, it reads the shared variables' storage, writes their
    updates back, and returns the explicit outputs (one value when the function has one)."""

    def __init__(self, call, n_inputs, cells, update_cells, n_outputs, single):
        self._call, self._n_inputs, self._cells = call, n_inputs, cells
        self._update_cells, self._n_outputs, self._single = update_cells, n_outputs, single
        self.trust_input = True

    def snapshot(self):
        """Copies of the current values of the shared variables it updates (on their device), for
        `restore`: the program donates the values themselves to its updates."""
        import jax

        return [jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, cell[0])
                for cell in self._update_cells]

    def restore(self, values):
        """Put `snapshot`'s values back into the shared variables (they are then the program's)."""
        for cell, value in zip(self._update_cells, values):
            cell[0] = value

    def __call__(self, *args):
        if len(args) != self._n_inputs:
            raise TypeError(f"expected {self._n_inputs} inputs, got {len(args)}")
        outputs = self._call(*args, *(cell[0] for cell in self._cells))
        for cell, value in zip(self._update_cells, outputs[self._n_outputs:]):
            cell[0] = value
        return outputs[0] if self._single else list(outputs[:self._n_outputs])


def platforms(values):
    """The platforms ('cpu', 'cuda', ...) that hold the JAX arrays among `values`, sorted."""
    import jax

    return sorted({device.platform for value in values for leaf in jax.tree.leaves(value)
                   if isinstance(leaf, jax.Array) for device in leaf.devices()})


def _on_device(cells):
    """The shared values with every leaf a JAX array on the state's device (a PyTensor RNG state
    holds Python and numpy scalars and arrays): the first call then has the types and placement
    of the values the program itself returns, so it is compiled once, not again at the second call."""
    import jax

    leaves = [leaf for cell in cells for leaf in jax.tree.leaves(cell[0])]
    device = next((next(iter(leaf.devices())) for leaf in leaves if isinstance(leaf, jax.Array)), None)
    with jax.enable_x64(False):
        for cell in cells:
            cell[0] = jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jax.device_put(np.asarray(x), device),
                                   cell[0])


def _jit(function, donated):
    import jax

    jitted = jax.jit(function, donate_argnums=tuple(donated))

    def call(*args):
        with jax.enable_x64(False), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Explicitly requested dtype")
            return jitted(*args)
    return call


def load(folder, key, inputs, outputs, updates):
    """The `Program` saved under `key` in `folder`, or None (missing, unreadable or not matching)."""
    import jax
    from pytensor.tensor.random.type import RandomType

    path = Path(folder) / (key + SUFFIX)
    try:
        blob = path.read_bytes()
        head, _, body = blob.partition(b"\n")
        meta = json.loads(head)
        if meta.get("format") != FORMAT or meta.get("key") != key:
            raise ValueError(f"written for another format or graph ({meta.get('format')}, {meta.get('key')})")
        if meta.get("n_inputs") != len(inputs):
            raise ValueError(f"it takes {meta.get('n_inputs')} inputs, the graph {len(inputs)}")
        if meta.get("sha256") != hashlib.sha256(body).hexdigest():
            raise ValueError("its content does not match its checksum (a damaged or partial file)")
        exported = jax.export.deserialize(bytearray(body))
        shared = shared_variables(inputs, outputs, updates)
        cells = []
        for name in meta["shared"]:
            var = shared[name]
            # PyTensor's JAX linker runs on a converted copy of an RNG's state; so does this
            cells.append(_rng_cell(var) if isinstance(var.type, RandomType) else var.container.storage)
        cells_by_name = dict(zip(meta["shared"], cells))
        update_cells = [cells_by_name[name] for name in meta["updated"]]
    except Exception as err:  # noqa: BLE001 (whatever is wrong with the file, compile as usual)
        if not isinstance(err, FileNotFoundError):
            logger.warning("ignoring the saved program %s: %s", path, err)
        return None
    _on_device(cells)
    logger.debug("compiled program loaded from %s", path)
    return Program(_jit(exported.call, meta["donated"]), meta["n_inputs"], cells, update_cells, meta["n_outputs"],
                   meta["single"])


def _looped(function, n_inputs, n_outputs, updated, repeat):
    """`function` (explicit inputs, then shared values -> explicit outputs, then the updated
    shared values) run `repeat` times in one `jax.lax.scan`: the explicit inputs and outputs,
    whose leading axis has length 1 in the graph, have length `repeat` here, one slice per pass;
    each pass sees the shared values the one before it updated (`updated`: their positions among
    the shared values)."""
    import jax

    def looped(*values):
        sequences, shared = values[:n_inputs], list(values[n_inputs:])

        def one_pass(carried, step):
            current = list(shared)
            for position, value in zip(updated, carried):
                current[position] = value
            out = function(*(value[None] for value in step), *current)
            return tuple(out[n_outputs:]), tuple(out[:n_outputs])

        final, stacked = jax.lax.scan(one_pass, tuple(shared[p] for p in updated), sequences, length=repeat)
        return (*(value.reshape((repeat * value.shape[1],) + value.shape[2:]) for value in stacked), *final)
    return looped


def _then(function, n_inputs, n_outputs, updated, after, after_positions):
    """`function` followed by `after` on the shared values it leaves (`after_positions`: where
    `after`'s inputs are among the shared values; `updated`: which of them `function` updates):
    its outputs come after `function`'s explicit outputs, before the updated values."""
    def run(*values):
        out = function(*values)
        shared = list(values[n_inputs:])
        for position, value in zip(updated, out[n_outputs:]):
            shared[position] = value
        extra = after(*(shared[p] for p in after_positions))
        return (*out[:n_outputs], *extra, *out[n_outputs:])
    return run


def from_function(fn, folder, key, single, repeat=1, after=None):
    """A `Program` running PyTensor function `fn` (JAX linker), `repeat` times per call (`_looped`:
    the loop is XLA's, so PyTensor rewrites and converts the graph of one pass only).

    `after`, a PyTensor function (JAX linker) of shared variables only, then runs in the same
    program on the values the call leaves: its outputs follow `fn`'s outputs (one XLA program, no
    second call; `fn`'s outputs are then a list even when `single`).

    With a `folder`, at its first call it exports the program there under `key`, then runs it as
    `load` would, so a later process compiles exactly the same XLA program (and finds it in
    XLA's cache); without one it only runs it."""
    import jax
    from pytensor.tensor.random.type import RandomType

    maker, linker = fn.maker, fn.maker.linker
    fgraph = maker.fgraph
    n_inputs = sum(1 for inp in maker.inputs if not inp.shared)
    thunk = fn.vm  # the JAX linker's one thunk: .inputs are the storage cells of fgraph.inputs
    cells = [_rng_cell(inp.variable, cell) if isinstance(inp.variable.type, RandomType) else cell
             for inp, cell in zip(maker.inputs[n_inputs:], thunk.inputs[n_inputs:])]
    updated_positions = [fgraph.update_mapping[o] for o in sorted(fgraph.update_mapping)]
    n_outputs = len(fgraph.outputs) - len(updated_positions)
    update_cells = [cells[i - n_inputs] for i in updated_positions]
    function = linker.raw_function
    updated = [i - n_inputs for i in updated_positions]
    # the RNG copy the linker made has no name: named after the original variable
    shared_names = [linker.original_names[i] for i in range(n_inputs, len(fgraph.inputs))]
    if repeat != 1:
        function = _looped(function, n_inputs, n_outputs, updated, repeat)
    if after is not None:  # its inputs are shared variables (`backend.compile_fn` refuses others)
        wanted = [inp.variable.name for inp in after.maker.inputs]
        if not set(wanted) <= set(shared_names):
            raise ValueError(f"`after` must read only shared variables that the program reads ({shared_names}); "
                             f"it reads {wanted}")
        n_after = len(after.maker.fgraph.outputs)
        function = _then(function, n_inputs, n_outputs, updated, after.maker.linker.raw_function,
                         [shared_names.index(name) for name in wanted])
        n_outputs, single = n_outputs + n_after, False
    state = {}

    def first_call(*values):
        _on_device(cells)
        values = [*values[:n_inputs], *(cell[0] for cell in cells)]
        donated = sorted(linker.donated)
        if folder is None:
            state["call"] = _jit(function, donated)
            return state["call"](*values)
        with jax.enable_x64(False), warnings.catch_warnings():  # as the linker's own calls
            warnings.filterwarnings("ignore", message="Explicitly requested dtype")
            exported = jax.export.export(jax.jit(function),  # for the state's device, which
                                         platforms=platforms(values) or None)(*values)  # need not be the default
        meta = {"format": FORMAT, "key": key, "n_inputs": n_inputs, "n_outputs": n_outputs, "single": single,
                "shared": shared_names, "donated": donated}
        meta["updated"] = [meta["shared"][i - n_inputs] for i in updated_positions]
        body = bytes(exported.serialize())
        meta["sha256"] = hashlib.sha256(body).hexdigest()
        _write(Path(folder) / (key + SUFFIX), json.dumps(meta).encode() + b"\n" + body)
        logger.debug("compiled program saved to %s", Path(folder) / (key + SUFFIX))
        state["call"] = _jit(exported.call, donated)
        return state["call"](*values)

    def call(*values):
        return (state.get("call") or first_call)(*values)

    return Program(call, n_inputs, cells, update_cells, n_outputs, single)


def _write(path, data):
    """Write atomically: a temporary file in the same folder, renamed over `path`."""
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".partial")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except OSError as err:
        logger.warning("could not save the compiled program to %s: %s", path, err)
        if temporary and os.path.exists(temporary):
            os.unlink(temporary)
