"""The negative sample store: popularity-weighted item ids drawn in advance.

Item i is drawn with probability proportional to support_i ** sample_alpha, with replacement, by
Walker's alias method; the store is drawn in advance and consumed one row per training step. A
GPU draws it itself; for a CPU numpy draws it, beside the other work of the fit.
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytensor
import pytensor.tensor as pt

from .backend import FLOATX, compile_fn, float32_graph, set_on_device, shared_on_device


def alias_table(probabilities):
    """Walker's alias table (Vose's construction) of a discrete distribution.

    Drawing column j uniformly, then keeping j with probability accept[j] or else taking
    alias[j], draws item i with probability probabilities[i]. Returns (accept, alias).
    """
    n = len(probabilities)
    scaled = np.asarray(probabilities, dtype=np.float64) * n
    accept, alias = np.ones(n), np.arange(n)
    small, large = list(np.flatnonzero(scaled < 1)), list(np.flatnonzero(scaled >= 1))
    while small and large:
        low, high = small.pop(), large.pop()
        accept[low], alias[low] = scaled[low], high
        scaled[high] -= 1 - scaled[low]
        (small if scaled[high] < 1 else large).append(high)
    return accept, alias  # leftovers (rounding) keep accept 1: they are their own column


class SampleStore:
    """Negative samples drawn in advance, consumed one row per training step.

    Item i is drawn with probability proportional to support_i ** alpha, with replacement, by the
    alias method (O(1) per draw). The store holds ``store_size // n_sample`` rows; with fewer than
    2 rows, every call draws fresh rows. It is refilled when the next call would run past its end
    (up to K-1 rows early: the rows are i.i.d., so this changes which draws are used, not their
    distribution).

    Where it is drawn (`draw_on`): a GPU draws the store itself with a compiled function (uniform
    columns, uniform floats, two gathers: the host keeps only a cursor; a host draw caps a GPU far
    below its step rate, about 17M ids/s on one CPU core against the 41M/s that 20,000 steps/s of
    2048 samples need). For a CPU, numpy draws it ("host"): as fast as the compiled draw there,
    with no program to compile, and the first draw runs in a thread while the fit builds its
    training function (numpy leaves Python's lock while it draws). "auto" chooses by the device.

    A refill told how many more rows the fit will use draws only those (rounded up to a power of
    two, at least PARTIAL_ROWS) into the first rows of the store: row r of a draw depends only on
    the generator's state and on r, and the generator moves on as after a whole draw, so these
    are the rows a whole draw would have given. A fit's last refill, mostly unused, then costs
    what it uses. (On the host, refill j draws from the j-th generators spawned from `rng`, in
    blocks of HOST_BLOCK values, so the same holds.)

    Attributes
    ----------
    var : shared variable
        The (rows, n_sample) int32 store on the device, refilled in place.
    """

    PARTIAL_ROWS = 64
    HOST_BLOCK = 1 << 20  # ids drawn at a time on the host (rounded to whole rows)

    def __init__(self, support, alpha, n_sample, store_size, steps_per_call, rng, device, draw_on="auto"):
        weights = np.asarray(support, dtype=np.float64) ** alpha
        self.accept, self.alias = alias_table(weights / weights.sum())
        self.n_sample, self.steps_per_call, self.device = n_sample, steps_per_call, device
        n_rows = store_size // n_sample if n_sample else 0
        self.n_rows = n_rows if n_rows < 2 else max(n_rows, steps_per_call)  # one call must fit
        self.cursor = self.filled = 0  # rows used, rows drawn since the last refill
        self.var = shared_on_device(np.zeros(self.shape, np.int32), "sample_store", device)
        if draw_on == "auto":
            draw_on = "host" if getattr(device, "platform", "cpu") == "cpu" else "device"
        if draw_on not in ("host", "device"):
            raise ValueError(f"draw_on must be 'auto', 'host' or 'device', got {draw_on!r}")
        self.draw_on, self._pending = draw_on, None  # _pending: a host draw running in a thread (a Future)
        if draw_on == "host":
            self._root = rng  # refill j draws from rng's j-th spawned generators
            self._host_accept, self._host_alias = self.accept.astype(FLOATX), self.alias.astype(np.int32)
        else:
            self._rng = pytensor.shared(rng, name="sample_rng")
            self._refills = {}  # rows drawn -> compiled refill; they share the generator's state

    @property
    def shape(self):
        return (self.n_rows if self.n_rows >= 2 else self.steps_per_call, self.n_sample)

    @float32_graph
    def _compile_refill(self, rows):
        accept = shared_on_device(self.accept.astype(FLOATX), "alias_accept", self.device)
        alias = shared_on_device(self.alias.astype(np.int32), "alias_index", self.device)
        size = (rows, self.n_sample)
        rng, column = pt.random.integers(0, len(self.accept), size=size, rng=self._rng, return_next_rng=True)
        rng, keep = pt.random.uniform(size=size, rng=rng, return_next_rng=True)
        column = column.astype("int32")
        drawn = pt.switch(keep < accept[column], column, alias[column]).astype("int32")
        new = drawn if rows == self.shape[0] else pt.set_subtensor(self.var[:rows], drawn)
        return compile_fn([], [], {self.var: new, self._rng: rng}, reuse=True, program=True)

    def _rows_to_draw(self, needed):
        if needed is None or self.n_rows < 2:
            return self.shape[0]
        return min(max(self.PARTIAL_ROWS, 1 << max(int(needed) - 1, 0).bit_length()), self.shape[0])

    def compile(self, needed=None):
        """Compile the refill function now (else the first refill does; nothing to compile when
        the host draws); `needed` as in `rows_for`. Returns the number of rows it draws."""
        rows = self._rows_to_draw(needed)
        if self.n_sample and self.draw_on == "device" and rows not in self._refills:
            self._refills[rows] = self._compile_refill(rows)
        return rows

    def prepare(self, needed=None):
        """Draw the store now, beside the host's next work (building the training function): on
        the device, or in a thread on the host. The first call then finds it full."""
        if self.n_rows >= 2:
            self.refill(needed, wait=False)
        else:  # a store of one call's rows is drawn by every call anyway
            self.compile(needed)

    def refill(self, needed=None, wait=True):
        """Draw the store anew: whole, or the rows that `needed` more steps use. Without `wait`,
        a host draw runs in a thread until the store is next used."""
        if not self.n_sample:
            return
        rows = self.compile(needed)
        if self.draw_on == "device":
            self._refills[rows]()
        else:
            self._settle()
            generators = self._root.spawn(2)
            if wait:
                self._put(self._draw_on_host(rows, *generators))
            else:
                self._pending = _in_background(self._draw_on_host, rows, *generators)
        self.cursor, self.filled = 0, rows

    def _draw_on_host(self, rows, columns_rng, keep_rng):
        drawn = np.zeros(self.shape, np.int32)  # rows past `rows` are not used before the next refill
        block = max(1, self.HOST_BLOCK // self.n_sample)
        for start in range(0, rows, block):
            size = (min(rows, start + block) - start, self.n_sample)
            column = columns_rng.integers(0, len(self.accept), size=size, dtype=np.int32)
            keep = keep_rng.random(size=size, dtype=np.float32) < self._host_accept[column]
            drawn[start:start + size[0]] = np.where(keep, column, self._host_alias[column])
        return drawn

    def _put(self, drawn):
        set_on_device(self.var, drawn, self.device)

    def _settle(self):
        """Wait for a draw running in a thread and put its rows in the store."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._put(pending.result())

    def _runs_out(self, n_used):
        """Whether a call using `n_used` rows does not fit in what is left of the store."""
        return self.n_rows < 2 or self.cursor + n_used > self.filled

    def needs_refill(self, step_active):
        """Whether `rows_for(step_active)` will draw the store anew (replacing the rows drawn)."""
        return bool(self.n_sample) and self._runs_out(int(step_active.sum()))

    def rows_for(self, step_active, needed=None):
        """Row index per step (K,); refills the store first when this call's rows do not fit.

        `needed`: how many active steps the fit has left, this call's included, when that is
        known exactly (None: not known; a refill then draws the whole store).
        Returns (rows, refilled).
        """
        n_used = int(step_active.sum())
        refilled = self._runs_out(n_used)
        if refilled:
            self.refill(needed)
        self._settle()
        rows = np.where(step_active, self.cursor + np.cumsum(step_active) - 1, 0).astype(np.int32)
        self.cursor += n_used if self.n_rows >= 2 else 0
        return rows, refilled


def _in_background(function, *args):
    """`function(*args)` started in a thread of its own; returns its Future (`result()` waits,
    then returns its value or raises its exception)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gru4rec-sample-store")
    try:
        return pool.submit(function, *args)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one task
