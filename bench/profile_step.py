"""Where a training step's time goes: XLA's own per-operation timings for one epoch of a fit.

Trains a model of a preset of `speed.py` (the published configurations among them) or of a
parameter file, on generated data or on a real events file, with the JAX profiler running for
one epoch after a warm-up epoch. XLA's CPU runtime records each executed operation (a fusion, a
scatter, a matrix product...) with its module; the optimised HLO, dumped by XLA, tells what each
operation contains. The report groups the training function's operations by what they do and
gives milliseconds per step and the share of the epoch's wall time; what is left of the wall
time is the host (Python, the session-parallel schedule, dispatch, reading the losses back).

Usage (from the repository root)::

    python bench/profile_step.py --preset rsc15_xe --data DATA/rsc15_100k/train_full.tsv
    python bench/profile_step.py --preset diginetica_bprmax --events 20000 --top 15
    python bench/profile_step.py --preset rsc15_xe --steps 64 --params momentum=0

Not a test; the timings of a loaded machine are inflated, the shares less so.
"""
import argparse
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# operation kinds, first match wins: (what the report calls it, HLO opcodes that make it so)
KINDS = [("sort (coalescing duplicate rows)", ("sort",)),
         ("scatter (row updates, coalescing)", ("scatter",)),
         ("matrix products", ("dot", "convolution")),
         ("gather (looked-up rows)", ("gather", "dynamic-slice")),
         ("random numbers (dropout)", ("rng-bit-generator", "rng", "rng-get-and-update-state")),
         ("reductions (loss, norms, finiteness)", ("reduce", "reduce-window", "all-reduce")),
         ("copies and layout", ("copy", "transpose", "dynamic-update-slice")),
         ("elementwise", ())]
CONTAINERS = ("while", "conditional", "call")  # their time is that of the operations inside


def parse_args(argv=None):
    import speed

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="rsc15_xe", help=f"one of: {', '.join(speed.PRESETS)}")
    parser.add_argument("--data", help="a real training events file (default: generated data)")
    parser.add_argument("--steps", type=int, default=None, help="steps_per_call K (default: the model's)")
    parser.add_argument("--items", type=int, help="catalogue size of generated data (default 40,000)")
    parser.add_argument("--events", type=int, default=30_000, help="generated training events per epoch")
    parser.add_argument("--params", default="", help="extra model parameters, e.g. 'momentum=0,dropout_p_hidden=0'")
    parser.add_argument("--sessions", type=int, default=3000,
                        help="train on the first N sessions of --data (the trace holds about 1,500 steps)")
    parser.add_argument("--keep", action="store_true", help="keep the raw trace and the HLO dump (printed path)")
    parser.add_argument("--top", type=int, default=12, help="list this many of the costliest operations")
    return parser.parse_args(argv)


def hlo_index(dump_dir):
    """{module file: {instruction name: (opcodes inside it, its shape text)}} from the optimised HLO."""
    modules = {}
    for path in glob.glob(os.path.join(dump_dir, "*after_optimizations.txt")):
        text = Path(path).read_text()
        bodies, current = {}, None
        for line in text.splitlines():
            head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{$", line)
            if head:
                current = bodies.setdefault(head.group(1), [])
            elif current is not None and " = " in line:
                current.append(line)
        ops = {}
        for lines in bodies.values():
            for line in lines:
                m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w\-]+)\(", line)
                if not m:
                    continue
                name, shape, opcode = m.groups()
                inside = {opcode}
                called = re.search(r"calls=%?([\w.\-]+)", line)
                if called and called.group(1) in bodies:
                    inside |= {re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = \S+ ([\w\-]+)\(", x).group(1)
                               for x in bodies[called.group(1)] if re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = \S+ [\w\-]+\(", x)}
                ops[name] = (inside, shape)
        modules[path] = ops
    return modules


def _union_ms(spans):
    """Total length (ms) of the union of (start, end) intervals given in microseconds."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total / 1e3


def kind_of(opcodes):
    for kind, names in KINDS:
        if any(op in opcodes for op in names):
            return kind
    return KINDS[-1][0]


def keep_freed_memory():
    """Stop glibc from handing freed memory back to the system (and faulting it in again).

    The profiler's own allocations make glibc trim and re-map the heap between steps; each step's
    fresh buffers then pay page faults that an unprofiled fit does not (measured on a 2-core AMD
    EPYC: 7.3-9.8 ms per traced step without this, 3.2-5.0 ms with it, rsc15_100k, 10,000
    sessions; an unprofiled fit's epoch runs about 2 ms per step either way). Returns whether it
    took effect (glibc only)."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    return all([libc.mallopt(M_TRIM_THRESHOLD, 1 << 30), libc.mallopt(M_TOP_PAD, 64 << 20),
                libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)])


def main(argv=None):
    args = parse_args(argv)
    kept = keep_freed_memory()
    work = tempfile.mkdtemp(prefix="gru4rec-profile-")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={work}/hlo --xla_dump_hlo_as_text").strip()
    import jax
    import pandas as pd

    import gru4rec
    import speed
    from gru4rec_lib import backend

    backend.disable_compilation_cache()  # compile here, so that XLA dumps the optimised HLO
    sargs = speed.parse_args(["--preset", args.preset, "--params", args.params])
    params = speed.preset_params(args.preset, sargs)
    if args.steps:
        params["steps_per_call"] = args.steps
    if args.data:
        train = pd.read_csv(args.data, sep="\t")
        train = train[train.SessionId.isin(train.SessionId.unique()[: args.sessions])]
        model = gru4rec.GRU4Rec(**dict(params, n_epochs=1)).fit(train)  # warm-up epoch
    else:
        n_items = args.items or speed.PRESETS[args.preset].get("items", speed.ITEMS)
        model = gru4rec.GRU4Rec(**dict(params, n_epochs=0, steps_per_call=params.get("steps_per_call") or 1))
        model.fit(speed.catalogue(n_items))
        train = speed.generated_data(n_items, max(args.events, 60 * params["batch_size"]), seed=0)
        model.set_params(n_epochs=1, steps_per_call=params.get("steps_per_call"))
        model.fit(train, retrain=True)  # warm-up epoch: compiles, fills the sample store
    trace_dir = os.path.join(work, "trace")
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0  # XLA's operations only: Python frames would fill the trace
    with jax.profiler.trace(trace_dir, profiler_options=options):
        model.fit(train, retrain=True)
    stats = model.epoch_stats_[-1]
    events = json.load(gzip.open(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[-1]))
    count, runs, n_events = defaultdict(int), defaultdict(list), len(events["traceEvents"])
    for e in events["traceEvents"]:
        a = e.get("args", {})
        if e.get("ph") == "X" and "hlo_op" in a and not a["hlo_op"].split(".")[0] in CONTAINERS:
            count[(a["hlo_module"], a["hlo_op"])] += 1
            runs[(a["hlo_module"], a.get("run_id"))].append((e["ts"], e["ts"] + e["dur"], a["hlo_op"]))
    modules = hlo_index(os.path.join(work, "hlo"))
    # the training function: the dumped module whose instructions ran most often (once per step each)
    best = max(modules, key=lambda path: sum(n for (mod, op), n in count.items() if op in modules[path]
                                              and mod in os.path.basename(path)))
    ops, module_name = modules[best], re.sub(r"^module_\d+\.|\.cpu_after_optimizations\.txt$", "", os.path.basename(best))
    # Its calls: PyTensor names every function alike, so other functions (the sample store's refill) can
    # share the module name; training calls all run the same set of operations, the most common one
    # (a call cut by the trace's end can differ; it is left out). [2:] drops fit's two idle calls
    # before the epoch. The trace keeps at most 1,000,000 events: a long epoch is cut, so the steps are
    # counted in the traced window, not taken from the epoch.
    calls = [spans for (mod, run), spans in runs.items() if mod == module_name]
    signature = lambda c: frozenset(op for _, _, op in c)  # the operations a call ran
    typical = max(set(map(signature, calls)), key=[signature(c) for c in calls].count)
    calls = sorted((c for c in calls if signature(c) == typical), key=min)[2:]
    spans = [span for c in calls for span in c]
    kinds, per_op = defaultdict(float), defaultdict(float)
    for start, end, op in spans:
        per_op[op] += (end - start) / 1e3  # ms
        kinds[kind_of(ops[op][0]) if op in ops else KINDS[-1][0]] += (end - start) / 1e3
    top = [(ms, op, ops.get(op, (set(), "?"))) for op, ms in per_op.items()]
    start, end = min(s for s, _, _ in spans), max(e for _, e, _ in spans)
    wall, n_steps = (end - start) / 1e3, len(calls) * model.config().steps_per_call
    busy, n_run = sum(kinds.values()), len(spans)
    outside = sum(e - s for c in runs.values() for s, e, _ in c) / 1e3 - busy  # every other call traced
    covered = _union_ms([(s, e) for s, e, _ in spans])  # XLA runs independent operations concurrently
    print(f"profile of one epoch: preset {args.preset}, {'data ' + args.data if args.data else 'generated data'}, "
          f"{model.n_items_} items, B={params['batch_size']}, layers {params['layers']}, "
          f"K={model.config().steps_per_call}; load average {tuple(round(x, 1) for x in os.getloadavg())}; "
          f"freed memory kept by glibc: {'yes' if kept else 'no'}")
    print(f"  epoch: {stats['seconds']:.2f} s, {stats['batches_per_s']:.0f} mini-batches/s, {stats['events_per_s']:.0f} "
          f"events/s; traced window: {n_steps} steps in {wall / 1e3:.2f} s, {wall / n_steps:.3f} ms per step"
          f"{' (trace full: the rest of the epoch was not recorded)' if n_events >= 999_000 else ''}")
    print(f"  {n_run / n_steps:.0f} XLA operations run per step, {busy / n_run * 1e3:.1f} us each on average; "
          f"some run side by side: {busy / n_steps:.3f} ms of operations in {covered / n_steps:.3f} ms of wall time")
    print(f"  {'operations of the training function':38s} {'ms/step':>8s} {'share of operation time':>24s}")
    for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"    {kind:36s} {ms / n_steps:8.3f} {ms / busy:8.1%}")
    host = wall - covered
    print(f"  {'wall time of a step':38s} {'ms/step':>8s} {'share of wall time':>24s}")
    print(f"    {'some XLA operation running':36s} {covered / n_steps:8.3f} {covered / wall:8.1%}")
    print(f"    {'no operation (Python, dispatch, sync)':36s} {host / n_steps:8.3f} {host / wall:8.1%}")
    refill_every = model.config().sample_store // max(params.get("n_sample", 1), 1)
    print(f"  other calls traced (fit's two idle calls; the sample store's refill, once per {refill_every} steps): "
          f"{outside:.1f} ms in all")
    print(f"  costliest operations of {module_name} ({len(ops)} instructions):")
    for ms, op, (inside, shape) in sorted(top, key=lambda t: -t[0])[: args.top]:
        print(f"    {ms / n_steps:7.3f} ms  {op:32s} {shape[:40]:40s} {kind_of(inside)}: "
              f"{','.join(sorted(inside - {'parameter', 'constant', 'fusion', 'bitcast', 'broadcast', 'tuple', 'get-tuple-element'}))[:70]}")
    if args.keep:
        print(f"  raw trace and HLO: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
