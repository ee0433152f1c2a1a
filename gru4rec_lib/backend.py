"""Running PyTensor graphs on JAX: the donating linker, float32 graphs, device placement.

The JAX linker runs every compiled function on CPU or GPU; the shared
variables that a function updates are donated to XLA so that the updates happen in place, and
every symbolic input has a static shape (JAX compiles one program per shape).
"""
import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.mode import Mode, get_mode
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Apply, Constant
from pytensor.graph.op import Op
from pytensor.graph.traversal import graph_inputs
from pytensor.link.jax.dispatch import jax_funcify
from pytensor.link.jax.linker import JAXLinker
from pytensor.tensor.type import TensorType

from gru4rec_lib import programs

logger = logging.getLogger(__name__)
FLOATX = "float32"


class DonatingJAXLinker(JAXLinker):
    """PyTensor's JAX linker, jitting with the updated shared inputs donated to XLA.

    The stock linker makes XLA copy every updated shared variable (the whole item matrix and its
    optimiser state) on each call; donating them lets the updates happen in place.
    Consequence: an array read with ``get_value(borrow=True)`` is invalid after the next call.
    """

    def __init__(self, *args, donate=True, **kwargs):
        self.donate = donate
        super().__init__(*args, **kwargs)

    def fgraph_convert(self, fgraph, *args, **kwargs):
        # the names of the shared inputs by position, before the RNGs are replaced by unnamed copies
        self.original_names = {i: var.name for i, var in enumerate(fgraph.inputs) if isinstance(var, SharedVariable)}
        return super().fgraph_convert(fgraph, *args, **kwargs)

    def jit_compile(self, fn):
        import jax

        updated = set((self.fgraph.update_mapping or {}).values()) - set(self.scalar_shape_inputs)
        self.raw_function, self.donated = fn, tuple(sorted(updated)) if self.donate else ()
        jitted = jax.jit(fn, static_argnums=self.scalar_shape_inputs, donate_argnums=self.donated)

        def call(*args):
            # 32-bit JAX even where another PyTensor graph switched the process-wide x64 flag on;
            # PyTensor asks for 64-bit accumulators, which JAX then keeps at 32 bits: no warning
            with jax.enable_x64(False), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Explicitly requested dtype")
                return jitted(*args)
        return call


def float32_graph(method):
    """Build the decorated graph with floatX=float32, so that Python scalars do not upcast."""
    def wrapper(*args, **kwargs):
        with pytensor.config.change_flags(floatX=FLOATX):
            return method(*args, **kwargs)
    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


def compile_fn(inputs, outputs, updates=None, donate=True, reuse=False, repeat=1, program=False, after=()):
    """Compile with the JAX linker (donating updated buffers) and float32 as floatX.

    With `reuse` (and the compilation cache on), the compiled program is kept in the cache
    folder and a later compile of an equal graph loads it instead of rewriting the graph
    (`gru4rec_lib.programs`); the result is then a `programs.Program`, called the same way.
    With `repeat` > 1 a call runs the graph `repeat` times in a loop of XLA's
    (`programs.from_function`): the explicit inputs and outputs, whose leading axis has length 1
    in the graph, have length `repeat` in a call, and each pass sees the previous pass's updates.
    With `program` the result is a `programs.Program` even with the cache off: programs that draw
    from one RandomType shared variable share its state (PyTensor functions each draw from a copy).
    `after`: outputs computed from shared variables only, on the values a call leaves (after its
    `repeat` passes), in the same program; a call then returns the outputs, then these.
    """
    _default_compilation_cache()
    explicit = [var for var in graph_inputs(list(after)) if not isinstance(var, (SharedVariable, Constant))]
    if explicit:
        raise ValueError(f"`after` must read only shared variables that the program reads; it reads {explicit}")
    folder = programs_folder() if reuse else None
    key = None
    if folder:
        try:
            key = programs.fingerprint(inputs, outputs, updates, donate, repeat, after)
        except programs.Uncacheable as err:
            logger.debug("compiled program not kept: %s", err)
        read = (list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]) + list(after)
        loaded = key and programs.load(folder, key, inputs, read, updates)
        if loaded:
            return loaded
    mode = Mode(linker=DonatingJAXLinker(donate=donate), optimizer=_rewrites(inputs, outputs, updates))
    with warnings.catch_warnings(), _own_temporary_folder():
        # the JAX linker works on a copy of shared RNGs: intended here
        warnings.filterwarnings("ignore", message=".*RandomType SharedVariables.*")
        fn = pytensor.function(inputs, outputs, updates=updates, mode=mode, on_unused_input="ignore")
    fn.trust_input = True  # inputs are built by this module with the right dtypes
    single = not isinstance(outputs, (list, tuple))
    then = None
    if after:
        with warnings.catch_warnings(), _own_temporary_folder():
            then = pytensor.function([], list(after), mode=Mode(linker=DonatingJAXLinker(donate=False),
                                                                optimizer=_rewrites([], after, None)))
    if repeat != 1 or after or (program and not key):
        if fn.maker.linker.scalar_shape_inputs:
            raise ValueError("a repeated function or a program needs static shapes")
        return programs.from_function(fn, folder if key else None, key, single, repeat, then)
    if key and not fn.maker.linker.scalar_shape_inputs:
        return programs.from_function(fn, folder, key, single)
    return fn


def _rewrites(inputs, outputs, updates):
    """PyTensor's rewrites for the JAX linker; on a CPU without PyTensor's elementwise fusion.

    PyTensor's fusion turns chains of elementwise operations into composite operations, which
    its JAX linker runs as vectorised scalar functions (`jnp.vectorize`); XLA fuses elementwise
    operations itself, and on a CPU the composites made training steps slower and compiles
    longer: rsc15_100k's epochs 1.22-1.31 s against 0.98-1.03 s with the same numbers to the digit
    (bench/README). The GPU keeps PyTensor's default until measured there.
    """
    query = get_mode("JAX").provided_optimizer
    roots = (list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]) + list((updates or {}).values())
    shared = [var for var in graph_inputs(list(inputs) + roots) if isinstance(var, SharedVariable)]
    storage = [var.container.storage[0] for var in shared]
    platforms = programs.platforms(storage) or [default_platform()]
    return query.excluding("fusion") if platforms == ["cpu"] else query


def default_platform():
    """The platform ('cpu', 'gpu') of JAX's default device."""
    import jax

    return jax.devices()[0].platform


def programs_folder():
    """Where compiled programs are kept: a folder in JAX's compilation cache folder, or None when
    the cache is off."""
    import jax

    cache = jax.config.jax_compilation_cache_dir
    if not cache:
        return None
    folder = Path(cache) / "gru4rec-programs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        logger.warning("compiled programs not kept: %s", err)
        return None
    return folder


@contextlib.contextmanager
def _own_temporary_folder():
    """Point `tempfile` at a folder removed afterwards: PyTensor's JAX linker writes the source of
    every function it generates to a temporary file it never deletes (about a hundred per fit,
    kept in /tmp for good). The code is compiled from memory; the files only serve tracebacks."""
    previous = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="gru4rec-") as folder:
        tempfile.tempdir = folder
        try:
            yield
        finally:
            tempfile.tempdir = previous


def schedule_inputs(steps, batch_size):
    """Symbolic (K, B) inputs, targets, reset and active, with static shapes (JAX needs them)."""
    return [pt.tensor("inputs", shape=(steps, batch_size), dtype="int32"),
            pt.tensor("targets", shape=(steps, batch_size), dtype="int32"),
            pt.tensor("reset", shape=(steps, batch_size), dtype="bool"),
            pt.tensor("active", shape=(steps, batch_size), dtype="bool")]


def device_put(value, device):
    import jax

    return jax.device_put(np.asarray(value), device)


def shared_on_device(value, name, device):
    """A shared variable whose storage already lives on `device` (set_value would copy it to numpy).
    On a CPU the device array may share `value`'s memory (JAX does not copy an aligned array):
    pass an array that nothing changes afterwards (this module's callers pass arrays they made)."""
    value = np.asarray(value)
    # static shapes: static slices for JAX; borrowed: the storage is replaced by the device's copy
    # at once, so PyTensor's own copy (40 MB for a default sample store) would be thrown away
    var = pytensor.shared(value, name=name, shape=value.shape, borrow=True)
    var.container.storage[0] = device_put(value, device)
    return var


def set_on_device(var, value, device):
    var.container.storage[0] = device_put(value, device)


def resolve_device(device):
    """Map None / 'cpu' / 'gpu' / 'cuda' to a JAX device; ValueError if it is not available."""
    import jax

    if device is None:
        return jax.devices()[0]
    platform = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu"}.get(str(device).lower())
    if platform is None:
        raise ValueError(f"device={device!r} is not one of None, 'cpu', 'gpu', 'cuda'")
    try:
        return jax.devices(platform)[0]
    except RuntimeError as err:
        raise ValueError(f"device={device!r} requested but JAX finds none ({err}); "
                         f"available: {[str(d) for d in jax.devices()]}") from None


CACHE_ENV = "GRU4REC_COMPILATION_CACHE"
CACHE_OFF = ("off", "0", "false", "no", "none")
_cache_checked = False  # the default cache is set up once per process, at the first compile


def default_cache_folder(environ=None):
    """The per-user cache folder: $XDG_CACHE_HOME/gru4rec/jax, else ~/.cache/gru4rec/jax."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gru4rec" / "jax"


def enable_compilation_cache(path=None, min_compile_seconds=0.0):
    """Keep compiled XLA programs on disk between runs (JAX's persistent compilation cache).

    The cache is on by default: the first compile of a process calls this unless the environment
    variable ``GRU4REC_COMPILATION_CACHE`` is ``off`` (or 0/false/no/none) or a JAX cache folder is
    already set. Call it yourself to choose the folder: `path`, else $GRU4REC_COMPILATION_CACHE when
    it names a folder, else `default_cache_folder()`. A second fit of the same shapes, in this or a
    later process, then loads the programs instead of compiling them; the same folder keeps the
    programs as PyTensor compiled them (`gru4rec_lib.programs`), so that such a fit also skips
    PyTensor's graph rewriting (rsc15_100k on a 2-core CPU: the compile step 1.07 s -> 0.36-0.40 s).
    Returns the folder used.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    global _cache_checked
    setting = os.environ.get(CACHE_ENV, "")
    folder = path or (setting if setting.lower() not in CACHE_OFF else None) or default_cache_folder()
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    compilation_cache.reset_cache()  # takes effect even after earlier compiles of this process
    _cache_checked = True
    return folder


def disable_compilation_cache():
    """Turn the persistent compilation cache off for this process (also the default one)."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    global _cache_checked
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()
    _cache_checked = True


def _default_compilation_cache():
    """At the first compile: the cache in the default folder, unless opted out or set up already."""
    global _cache_checked
    if _cache_checked:
        return
    _cache_checked = True
    import jax

    if jax.config.jax_compilation_cache_dir or os.environ.get(CACHE_ENV, "").lower() in CACHE_OFF:
        return
    try:
        enable_compilation_cache()
    except OSError as err:  # a read-only home must not stop training
        logger.warning("compilation cache off: %s (set %s=off to silence this)", err, CACHE_ENV)


class TopK(Op):
    """The k largest values of each row of a matrix and their column indices, best first.

    ``values, indices = TopK(k)(x)``. Under the JAX linker this is ``jax.lax.top_k`` on the
    device (ties: the lower column first); `perform` is the numpy definition it must equal.
    """

    __props__ = ("k",)

    def __init__(self, k):
        self.k = int(k)

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        rows = x.type.shape[0]
        return Apply(self, [x], [TensorType(x.dtype, shape=(rows, self.k))(),
                                 TensorType("int32", shape=(rows, self.k))()])

    def perform(self, node, inputs, outputs):
        x = inputs[0]
        idx = np.argsort(-x, axis=1, kind="stable")[:, : self.k]
        outputs[0][0] = np.take_along_axis(x, idx, axis=1)
        outputs[1][0] = idx.astype(np.int32)


@jax_funcify.register(TopK)
def _jax_top_k(op, **kwargs):
    import jax

    def top_k(x):
        values, indices = jax.lax.top_k(x, op.k)
        return values, indices.astype("int32")
    return top_k


class Settled(Op):
    """Its inputs, unchanged, computed in full before anything that reads its outputs.

    ``a, b = Settled()(a, b)`` (one input: one output). Under the JAX linker this is
    ``jax.lax.optimization_barrier``: XLA neither fuses the computation of the inputs into their
    readers nor computes them twice. The whole-matrix optimiser update uses it so that each of a
    matrix's arrays is read once and written in place: fused, every new array recomputed the new
    accumulator from the old one, and XLA copied the accumulator and the velocity at every step
    to keep their old values for those readers.
    """

    __props__ = ()

    def make_node(self, *values):
        values = [pt.as_tensor_variable(v) for v in values]
        return Apply(self, values, [v.type() for v in values])

    def perform(self, node, inputs, outputs):
        for value, out in zip(inputs, outputs):
            out[0] = value

    def infer_shape(self, fgraph, node, shapes):
        return shapes


@jax_funcify.register(Settled)
def _jax_settled(op, node=None, **kwargs):
    import jax

    if node is not None and len(node.outputs) == 1:
        return lambda value: jax.lax.optimization_barrier(value)
    return lambda *values: jax.lax.optimization_barrier(values)


def settled(values):
    """{key: value} with every value computed in full before its readers (`Settled`)."""
    keys = list(values)
    if not keys:
        return {}
    out = Settled()(*(values[k] for k in keys))
    return dict(zip(keys, out if isinstance(out, (list, tuple)) else [out]))
