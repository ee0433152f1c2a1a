"""Speed benchmark: training mini-batches/s and events/s, evaluation events/s, compile time.

Measures GRU4Rec training for several shapes (batch size B, hidden size h), the two recommended
losses (cross-entropy + softmax + logQ 1, bpr-max + elu-0.5) and several ``steps_per_call`` K,
on whatever device JAX sees; evaluation (Recall/MRR against all items) per hidden size and
loss; compile time with the persistent compilation cache cold and warm; optionally a
1,000,000-item run (``--million``) and real data (``--real``). Not a test.

Usage (from the repository root)::

    python bench/speed.py --quick            # about 1 minute on a 2-core CPU
    python bench/speed.py                    # the default grid, about 5 minutes
    python bench/speed.py --full             # more K, more events, more repeats
    python bench/speed.py --million          # add the 1M-item run (40k vs 1M items, peak memory)
    python bench/speed.py --real ../shared/data/yoochoose1_64/train.tsv \\
        --real-test ../shared/data/yoochoose1_64/test.tsv --shapes 80x224 --steps 64

How it measures (STYLE §9): every model is compiled and warmed up off the clock (``fit`` runs
two idle calls before its first epoch, and the first epoch, which also draws the negative
sample store, is a warm-up epoch); the numbers are the median of the following epochs, each
timed by ``fit`` itself (``epoch_stats_``: it blocks on the last call's losses before it stops
the clock). Events/s counts the (input, target) pairs of the epoch; mini-batches/s counts the
steps with at least one active slot. Evaluation is timed on its second call (the first
compiles). Every item count is exact: the model first learns the whole catalogue (one 2-event
session per item pair, ``n_epochs=0``) and is then trained with ``retrain=True`` on the
measured data, so a 40k- and a 1M-item model train on the same events.
"""
import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_ITEMS = 40_000
MILLION = 1_000_000
LOSSES = {  # name -> model parameters
    "xe": dict(loss="cross-entropy", final_act="softmax", logq=1.0),
    "bprmax": dict(loss="bpr-max", final_act="elu-0.5", bpreg=1.0, logq=0.0),
}
LOSS_LABEL = {"xe": "xe+softmax+logq", "bprmax": "bpr-max+elu-0.5"}
COMMON = dict(n_sample=2048, constrained_embedding=True, sample_alpha=0.75, learning_rate=0.05,
              momentum=0.0, dropout_p_embed=0.0, dropout_p_hidden=0.0, show_progress=False, seed=42)
# Issue 5 targets. The PyTorch figure is the authors' code, single-threaded, on the 2-core CPU of
# the development machine at B=80/h=224: a reference, not measured by this script.
PYTORCH_CPU_EVENTS_PER_S = 3800
CPU_TARGET_EVENTS_PER_S = 2.5 * PYTORCH_CPU_EVENTS_PER_S
GPU_TARGET_BATCHES_PER_S = {(32, 100): 20_000, (80, 224): 15_000}
PRESETS = {  # per mode; per-device step counts: (cpu, gpu)
    "quick": dict(shapes="80x224", steps="1,64", epochs=2, events_per_epoch=(20_000, 200_000),
                  test_events=20_000, cache_check=False),
    "default": dict(shapes="32x100,80x224,512x224", steps="1,64", epochs=2, events_per_epoch=(30_000, 400_000),
                    test_events=20_000, cache_check=True),
    "full": dict(shapes="32x100,80x224,512x224", steps="1,16,64", epochs=3, events_per_epoch=(100_000, 2_000_000),
                 test_events=70_000, cache_check=True),
}
MIN_STEPS_PER_EPOCH = 60  # with sessions cut at 10 events, the epoch's ragged tail stays under 10 steps
MAX_SESSION_LENGTH = 10


# ---------------------------------------------------------------------------- arguments
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="B=80/h=224 only, K=1 and 64, short epochs (~1 min)")
    mode.add_argument("--full", action="store_true", help="K=1,16,64, long epochs, 3 measured epochs, 70k test events")
    parser.add_argument("--shapes", help="comma-separated BxH, e.g. 32x100,80x224 (default per mode)")
    parser.add_argument("--losses", default="xe,bprmax", help="comma-separated among: " + ", ".join(LOSSES))
    parser.add_argument("--steps", help="comma-separated steps_per_call K; the smallest is the baseline")
    parser.add_argument("--epochs", type=int, help="measured epochs per configuration (after one warm-up epoch)")
    parser.add_argument("--events-per-epoch", type=int,
                        help=f"synthetic training events per epoch (at least {MIN_STEPS_PER_EPOCH} mini-batches)")
    parser.add_argument("--test-events", type=int, help="evaluation events (synthetic, or the first of --real-test)")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation measurements")
    parser.add_argument("--params", default="", help="extra model parameters, e.g. 'momentum=0.3,n_sample=1024'")
    parser.add_argument("--device", choices=["cpu", "gpu"], help="model device (default: JAX's default device)")
    parser.add_argument("--cpus", type=int, help="restrict the process to this many CPU cores (1: single-threaded)")
    parser.add_argument("--million", action="store_true",
                        help="also train with 1,000,000 items vs 40,000 (subprocesses)")
    parser.add_argument("--million-items", type=int, default=MILLION, help=argparse.SUPPRESS)
    parser.add_argument("--real", metavar="TRAIN", help="real training events (TSV/CSV...) instead of synthetic data")
    parser.add_argument("--real-test", metavar="TEST", help="real test events for the evaluation measurement")
    parser.add_argument("--real-events", type=int, default=100_000,
                        help="train on the first sessions of --real up to this many events (all items are kept)")
    parser.add_argument("--cache-dir", default=str(ROOT / "bench" / "results" / "jax-cache"),
                        help="JAX persistent compilation cache (default: bench/results/jax-cache)")
    parser.add_argument("--no-cache", action="store_true", help="do not enable the persistent compilation cache")
    parser.add_argument("--cache-check", dest="cache_check", action="store_true", default=None,
                        help="measure compile time with a cold and a warm cache (default: on, off with --quick)")
    parser.add_argument("--no-cache-check", dest="cache_check", action="store_false")
    parser.add_argument("--json", help="write the results here (default: bench/results/speed-<device>.json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one measurement, print JSON
    args = parser.parse_args(argv)
    args.mode = "quick" if args.quick else "full" if args.full else "default"
    preset = PRESETS[args.mode]
    for name in ("shapes", "steps", "epochs", "test_events", "cache_check"):
        if getattr(args, name) is None:
            setattr(args, name, preset[name])
    args.shape_list = [tuple(int(x) for x in s.lower().split("x")) for s in args.shapes.split(",") if s]
    args.loss_list = [name for name in args.losses.split(",") if name]
    unknown = set(args.loss_list) - set(LOSSES)
    if unknown:
        parser.error(f"unknown losses {sorted(unknown)}; use {list(LOSSES)}")
    args.k_list = sorted({int(k) for k in args.steps.split(",") if k})
    if args.epochs < 1 or not args.k_list or min(args.k_list) < 1 or not args.shape_list:
        parser.error("need --epochs >= 1, at least one shape and one K >= 1")
    args.preset_events_per_epoch = preset["events_per_epoch"]
    return args


def setup_process(args):
    """CPU affinity and the persistent compilation cache; must run before JAX compiles anything."""
    if args.cpus:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cpus])
    sys.path.insert(0, str(ROOT))  # benchmark the working tree
    import jax

    if not args.no_cache:
        Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", args.cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # cache small programs too
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return jax


# ---------------------------------------------------------------------------- machine
def machine_info(jax, args):
    import numpy
    import pytensor

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = jax.devices()[0]
    info = {
        "cpu": cpu, "cpu_cores": os.cpu_count(), "cpu_affinity": len(os.sched_getaffinity(0)),
        "jax_device": str(device), "jax_platform": device.platform,
        "jax_device_kind": getattr(device, "device_kind", ""), "jax_devices": [str(d) for d in jax.devices()],
        "python": platform.python_version(), "pytensor": pytensor.__version__, "jax": jax.__version__,
        "numpy": numpy.__version__, "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "load_average_start": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        import jaxlib

        info["jaxlib"] = jaxlib.__version__
    except (ImportError, AttributeError):
        pass
    try:
        import gru4rec

        info["gru4rec"] = gru4rec.__version__
    except (ImportError, AttributeError):
        pass
    return info


def peak_memory(jax):
    """Peak device memory on an accelerator, peak process RSS on the CPU (both high-water marks, set-up
    included), and the memory in use now."""
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" and hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return {"what": f"{device.platform} peak_bytes_in_use", "bytes": int(stats["peak_bytes_in_use"]),
                "now_bytes": int(stats.get("bytes_in_use", 0))}
    now = None
    try:
        with open("/proc/self/statm") as f:
            now = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    return {"what": "process peak RSS", "bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "now_bytes": now}


# ---------------------------------------------------------------------------- data
def catalogue(item_ids):
    """One 2-event session per pair of items: fitting it (n_epochs=0) makes the model know them all."""
    import numpy as np
    import pandas as pd

    ids = np.asarray(item_ids)
    if len(ids) % 2:
        ids = np.concatenate([ids, ids[:1]])
    n = len(ids)
    return pd.DataFrame({"SessionId": np.arange(n) // 2, "ItemId": ids, "Time": np.arange(n, dtype=float)})


def truncate_sessions(events, max_length):
    keep = events.groupby("SessionId", sort=False).cumcount().to_numpy() < max_length
    return events[keep]


def first_sessions(events, n_pairs):
    """The first sessions (in row order) holding about `n_pairs` (input, target) pairs."""
    import numpy as np

    sizes = events.groupby("SessionId", sort=False).size()
    pairs = np.cumsum(np.maximum(sizes.to_numpy() - 1, 0))
    keep = sizes.index[: int(np.searchsorted(pairs, n_pairs)) + 1]
    return events[events["SessionId"].isin(keep)]


def n_pairs(events):
    """(input, target) pairs: the events an epoch trains on."""
    sizes = events.groupby("SessionId", sort=False).size().to_numpy()
    return int((sizes - 1).clip(0).sum())


def synthetic_train(batch_size, steps_per_epoch, n_items, seed=0):
    """Synthetic sessions (planted structure, Zipf popularity) for about `steps_per_epoch` full steps."""
    from gru4rec_lib import synthetic

    pairs = steps_per_epoch * batch_size
    events = synthetic.generate_sessions(n_sessions=pairs // 3 + 200, n_items=n_items, seed=seed)
    return first_sessions(truncate_sessions(events, MAX_SESSION_LENGTH), pairs)


def synthetic_test(n_events, n_items, seed=1):
    from gru4rec_lib import synthetic

    events = synthetic.generate_sessions(n_sessions=n_events // 5 + 100, n_items=n_items, seed=seed)
    return first_sessions(events, n_events)


def model_params(args, h, batch_size, loss, K, n_epochs):
    import gru4rec
    from gru4rec_lib import params as paramtext

    values = dict(COMMON, layers=(h,), batch_size=batch_size, steps_per_call=K, n_epochs=n_epochs, **LOSSES[loss])
    if args.device:
        values["device"] = args.device
    if args.params:
        values.update(paramtext.parse_param_string(args.params, gru4rec.GRU4Rec().get_params()))
    return values


def catalogue_model(args, h, items):
    """A model that knows every item of `items` (fit with n_epochs=0: compiled, not trained)."""
    import gru4rec

    model = gru4rec.GRU4Rec(**model_params(args, h, 32, args.loss_list[0], 1, 0))
    started = time.perf_counter()
    model.fit(catalogue(items))
    return model, time.perf_counter() - started


# ---------------------------------------------------------------------------- measurements
def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def train_once(args, model, train, batch_size, loss, K):
    """Retrain `model` on `train` with this configuration: 1 warm-up + args.epochs measured epochs."""
    h = model.get_params()["layers"][0]
    model.set_params(**model_params(args, h, batch_size, loss, K, 1 + args.epochs))
    model.fit(train, retrain=True)
    measured = model.epoch_stats_[1:]
    bps = [s["batches_per_s"] for s in measured]
    eps = [s["events_per_s"] for s in measured]
    row = {"B": batch_size, "h": h, "loss": loss, "K": K, "n_items": model.n_items_,
           "batches_per_s": median(bps), "events_per_s": median(eps),
           "spread": (max(eps) - min(eps)) / median(eps) if len(eps) > 1 else None,
           "epoch_seconds": [s["seconds"] for s in model.epoch_stats_],
           "epoch_events_per_s": [s["events_per_s"] for s in model.epoch_stats_],
           "compile_seconds": model.compile_seconds_}
    row["fill"] = row["events_per_s"] / (batch_size * row["batches_per_s"])  # active slots / slots
    return row


def host_ceiling(train, batch_size, K):
    """Mini-batches/s the host-side schedule alone can produce (an upper bound for a fast device)."""
    from gru4rec_lib import sessiondata

    data = sessiondata.SessionData.from_events(train, sessiondata.ItemMap.from_events(train["ItemId"]))
    order = data.session_order(True)
    started, n_steps = time.perf_counter(), 0
    for chunk in sessiondata.session_parallel_schedule(data, order, batch_size, K):
        n_steps += int(chunk.active.any(axis=1).sum())
    return n_steps / (time.perf_counter() - started)


def store_refill(model, train):
    """Seconds to draw a full negative sample store (the first epoch and every n_rows steps pay it)."""
    import numpy as np

    from gru4rec_lib import sampling
    from gru4rec_lib import sessiondata

    cfg = model.get_params()
    try:
        data = sessiondata.SessionData.from_events(train, model.item_map_)
        support = np.maximum(data.item_support(model.n_items_), 1)
        store = sampling.SampleStore(support, cfg["sample_alpha"], cfg["n_sample"], cfg["sample_store"],
                                    cfg["steps_per_call"] or 1, np.random.default_rng(0), model._cfg.device)
        store.refill()  # the first call compiles
        store.var.get_value(borrow=True).block_until_ready()
        started = time.perf_counter()
        store.refill()
        store.var.get_value(borrow=True).block_until_ready()
        return {"seconds": time.perf_counter() - started, "rows": int(store.n_rows)}
    except (AttributeError, TypeError, ValueError) as err:  # the store's API moved: report, do not fail
        return {"seconds": None, "rows": None, "error": repr(err)}


def eval_once(model, test, repeats=1, batch_size=512, steps=32):
    """evaluate() once on a few sessions (it compiles), then `repeats` timed calls on the whole test set
    (median); compile ~ first call - its share of the timed speed; fill = points / (slots x steps)."""
    import evaluation
    from gru4rec_lib import sessiondata

    small = first_sessions(test, 200)
    first = evaluation.evaluate(model, small, batch_size=batch_size, steps_per_call=steps)
    timed = [evaluation.evaluate(model, test, batch_size=batch_size, steps_per_call=steps) for _ in range(repeats)]
    seconds = median([t["seconds"] for t in timed])

    def n_calls_of(events):
        data = sessiondata.SessionData.from_events(sessiondata.load_events(events), model.item_map_, drop_unknown=True)
        return sessiondata.n_chunks(data, data.session_order(False), batch_size, steps)

    n_calls, small_calls = n_calls_of(test), n_calls_of(small)
    per_call = seconds / n_calls
    return {"h": model.get_params()["layers"][0], "n_items": model.n_items_, "n_points": timed[0]["n_points"],
            "events_per_s": timed[0]["n_points"] / seconds, "seconds": seconds,
            "timed_seconds": [t["seconds"] for t in timed], "first_call_seconds": first["seconds"],
            "compile_seconds": max(first["seconds"] - small_calls * per_call, 0.0),
            "fill": timed[0]["n_points"] / (batch_size * steps * n_calls), "recall@20": timed[0]["recall"].get(20)}


def events_per_epoch(args, jax):
    if args.events_per_epoch:
        return args.events_per_epoch
    return args.preset_events_per_epoch[0 if jax.devices()[0].platform == "cpu" else 1]


def steps_per_epoch(args, jax, batch_size):
    return max(MIN_STEPS_PER_EPOCH, events_per_epoch(args, jax) // batch_size)


def run_grid(args, jax, log):
    """The main table: every shape x loss x K, and evaluation per hidden size x loss."""
    import pandas as pd

    from gru4rec_lib import sessiondata

    if args.real:
        events = sessiondata.load_events(args.real)
        items = pd.unique(events["ItemId"])
        real_train = first_sessions(events, args.real_events)
        log(f"real data {args.real}: {len(events)} events, {len(items)} items; training on the first "
            f"{len(real_train)} events")
        test = first_sessions(sessiondata.load_events(args.real_test), args.test_events) if args.real_test else None
    else:
        items, real_train = list(range(N_ITEMS)), None
        test = synthetic_test(args.test_events, N_ITEMS)
    rows, evals, refills, models = [], [], {}, {}
    for B, h in args.shape_list:
        train = real_train if real_train is not None else synthetic_train(B, steps_per_epoch(args, jax, B), N_ITEMS)
        if h not in models:
            models[h], setup_s = catalogue_model(args, h, items)
            log(f"h={h}: catalogue of {models[h].n_items_} items set up in {setup_s:.1f} s (not timed)")
        for loss in args.loss_list:
            for K in args.k_list:
                try:
                    row = train_once(args, models[h], train, B, loss, K)
                except Exception as err:  # noqa: BLE001 - a diverged or broken config must not end the run
                    if type(err).__name__ != "ModelFitError":
                        raise
                    models[h], _ = catalogue_model(args, h, items)  # fresh weights, then once more
                    row = train_once(args, models[h], train, B, loss, K)
                row["events_per_epoch"] = n_pairs(train)
                row["host_batches_per_s"] = host_ceiling(train, B, K)
                key = (B, h, loss)
                if key not in refills:
                    refills[key] = store_refill(models[h], train)
                row["store_refill"] = refills[key]
                rows.append(row)
                log(format_row(row, rows))
            done = [e for e in evals if e["h"] == h and (e["loss"] == loss or args.mode != "full")]
            if test is not None and not args.no_eval and not done:  # full: every loss; else the first per h
                result = eval_once(models[h], test, repeats=args.epochs)
                result["loss"] = loss
                evals.append(result)
                log(f"  evaluate h={h} {loss}: {result['events_per_s']:.0f} events/s "
                    f"({result['n_points']} points, {result['n_items']} items)")
    return rows, evals


# ---------------------------------------------------------------------------- subprocess measurements
def child_command(args, spec):
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    if args.no_cache or spec.get("cache_dir"):
        command.append("--no-cache")  # the child sets its own cache dir from spec
    else:
        command += ["--cache-dir", args.cache_dir]
    command += ["--epochs", str(args.epochs)]
    if args.cpus:
        command += ["--cpus", str(args.cpus)]
    if args.device:
        command += ["--device", args.device]
    if args.params:
        command += ["--params", args.params]
    return command


def run_child(args, spec, timeout=1800):
    result = subprocess.run(child_command(args, spec), capture_output=True, text=True, timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not lines:
        return {"error": f"exit {result.returncode}: {result.stderr.strip()[-2000:]}"}
    return json.loads(lines[-1])


def child_main(args, spec):
    """Run one measurement in a fresh process (clean peak memory; a given cache state); print JSON."""
    if spec.get("cache_dir"):
        args.no_cache, args.cache_dir = False, spec["cache_dir"]
    jax = setup_process(args)
    B, h, K, loss = spec["B"], spec["h"], spec["K"], spec["loss"]
    out = {"what": spec["what"], "device": str(jax.devices()[0])}
    started = time.perf_counter()
    model, _ = catalogue_model(args, h, range(spec["n_items"]))
    out["setup_seconds"] = time.perf_counter() - started
    train = synthetic_train(B, spec["steps_per_epoch"], min(spec["n_items"], N_ITEMS))
    out.update(train_once(args, model, train, B, loss, K))
    if spec["what"] == "compile":
        out["eval"] = eval_once(model, synthetic_test(spec["test_events"], min(spec["n_items"], N_ITEMS)))
    out["peak_memory"] = peak_memory(jax)
    print(json.dumps(out))


# ---------------------------------------------------------------------------- report
def baseline_of(row, rows):
    """The same shape and loss at the smallest K measured (K=1 by default)."""
    same = [r for r in rows if (r["B"], r["h"], r["loss"]) == (row["B"], row["h"], row["loss"])]
    return min(same, key=lambda r: r["K"]) if same else row


def refill_share(row):
    """Share of time a steady-state run would spend drawing the sample store (not in the epochs timed)."""
    refill = row.get("store_refill") or {}
    if not refill.get("seconds") or not refill.get("rows"):
        return None
    compute = refill["rows"] / row["batches_per_s"]
    return refill["seconds"] / (refill["seconds"] + compute)


def format_row(row, rows):
    base = baseline_of(row, rows)
    spread = f"{100 * row['spread']:4.0f}%" if row.get("spread") is not None else "    -"
    refill = refill_share(row)
    return (f"  B={row['B']:<4d}h={row['h']:<5d}{LOSS_LABEL[row['loss']]:<17s}K={row['K']:<4d}"
            f"{row['batches_per_s']:9.1f} {row['events_per_s']:9.0f} {spread} {row['fill']:5.2f} "
            f"{row['events_per_s'] / base['events_per_s']:6.2f}x {row['compile_seconds']:7.1f} "
            f"{row.get('host_batches_per_s', float('nan')):9.0f} "
            + (f"{100 * refill:6.1f}%" if refill is not None else "      -"))


TABLE_HEADER = ("  shape       loss             K      mini-b/s  events/s  ±    fill  vs K{k0} compile_s"
                "  host mb/s refill")


def targets_lines(rows, platform_name):
    lines = []
    for row in rows:
        if platform_name == "cpu" and (row["B"], row["h"]) == (80, 224):
            lines.append(f"  B=80/h=224 {LOSS_LABEL[row['loss']]} K={row['K']}: {row['events_per_s']:.0f} events/s = "
                         f"{row['events_per_s'] / PYTORCH_CPU_EVENTS_PER_S:.2f}x the authors' PyTorch reference "
                         f"({PYTORCH_CPU_EVENTS_PER_S}/s single-threaded, not measured here); target >= "
                         f"{CPU_TARGET_EVENTS_PER_S:.0f} (2.5x): "
                         f"{'met' if row['events_per_s'] >= CPU_TARGET_EVENTS_PER_S else 'NOT met'}")
        target = GPU_TARGET_BATCHES_PER_S.get((row["B"], row["h"]))
        if platform_name == "gpu" and target:
            lines.append(f"  B={row['B']}/h={row['h']} {LOSS_LABEL[row['loss']]} K={row['K']}: "
                         f"{row['batches_per_s']:.0f} mini-batches/s; target >= {target} (H200): "
                         f"{'met' if row['batches_per_s'] >= target else 'NOT met'}")
    return lines


def gib(n_bytes):
    return f"{n_bytes / 2 ** 30:.2f} GiB"


def print_report(info, rows, evals, cache, million):
    print()
    print(f"gru4rec speed ({info['mode']}), {info['date']}")
    print(f"  machine: {info['cpu']}, {info['cpu_cores']} cores ({info['cpu_affinity']} usable); "
          f"JAX device: {info['jax_device']} {info['jax_device_kind']}")
    print(f"  versions: python {info['python']}, pytensor {info['pytensor']}, jax {info['jax']}, "
          f"numpy {info['numpy']}, gru4rec {info.get('gru4rec', '?')}")
    print(f"  command: {info['command']}")
    print(f"  load average at start {tuple(round(x, 1) for x in info['load_average_start'])}, at end "
          f"{tuple(round(x, 1) for x in info['load_average_end'])} (above the core count: other work shares "
          f"the CPU and the numbers are low and noisy)")
    print(f"  data: {info['data']}; compilation cache: {info['cache']}")
    if rows:
        print("\nTraining (median of the measured epochs; ± = max-min spread over them; fill = active slots; "
              "host mb/s = the schedule alone; refill = estimated share of a long run spent drawing the "
              "sample store, not in the timed epochs)")
        print(TABLE_HEADER.format(k0=min(r["K"] for r in rows)))
        for row in rows:
            print(format_row(row, rows))
        for line in targets_lines(rows, info["jax_platform"]):
            print(line)
    if evals:
        print("\nEvaluation (Recall/MRR@1,5,10,20 against all items; batch 512, K=32; second call timed)")
        print("  h     loss             items    points   events/s  fill  first call s  ~compile s "
              "(first call: 200 points, compiles)")
        for e in evals:
            print(f"  {e['h']:<5d} {LOSS_LABEL[e['loss']]:<16s} {e['n_items']:<8d} {e['n_points']:<8d} "
                  f"{e['events_per_s']:9.0f} {e['fill']:5.2f} {e['first_call_seconds']:12.2f} "
                  f"{e['compile_seconds']:11.2f}")
    if cache:
        print("\nCompile time, persistent compilation cache cold vs warm (fresh processes, "
              f"B={cache['B']}/h={cache['h']} {LOSS_LABEL[cache['loss']]} K={cache['K']})")
        for name in ("cold", "warm"):
            c = cache[name]
            if "error" in c:
                print(f"  {name}: failed: {c['error']}")
                continue
            print(f"  {name}: fit compile {c['compile_seconds']:.1f} s, first evaluate call "
                  f"{c['eval']['first_call_seconds']:.2f} s (evaluate compile ~{c['eval']['compile_seconds']:.2f} s)")
    if million:
        n_big = million["n_items_big"]
        print(f"\n{n_big:,} items vs {N_ITEMS:,} (B={million['B']}/h={million['h']} "
              f"{LOSS_LABEL[million['loss']]} K={million['K']}, "
              "same training events, fresh processes)")
        for name in ("base", "million"):
            m = million[name]
            if "error" in m:
                print(f"  {name}: failed: {m['error']}")
                continue
            print(f"  {m['n_items']:>9d} items: {m['batches_per_s']:8.1f} mini-batches/s {m['events_per_s']:8.0f} "
                  f"events/s, compile {m['compile_seconds']:.1f} s, setup {m['setup_seconds']:.1f} s, "
                  f"{m['peak_memory']['what']} {gib(m['peak_memory']['bytes'])}"
                  + (f" (after training {gib(m['peak_memory']['now_bytes'])})"
                     if m["peak_memory"].get("now_bytes") else ""))
        if million.get("ratio") is not None:
            print(f"  ratio {n_big:,} / {N_ITEMS:,} items (events/s): {million['ratio']:.2f} (the design asks for ~1: "
                  "a step touches only the sampled rows)")
    print(f"\n  wall time {info['wall_seconds']:.0f} s; peak memory of this process: {info['peak_memory']['what']} "
          f"{gib(info['peak_memory']['bytes'])}")


# ---------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child_main(args, json.loads(args.child))
    started = time.perf_counter()
    jax = setup_process(args)
    info = machine_info(jax, args)
    info["mode"] = args.mode
    n_cached = len(list(Path(args.cache_dir).glob("*"))) if not args.no_cache else 0
    info["cache"] = ("off" if args.no_cache else
                     f"{args.cache_dir} ({n_cached} entries at start: {'warm' if n_cached else 'cold'})")
    info["data"] = (f"{args.real} (first ~{args.real_events} events)" if args.real else
                    f"synthetic, {N_ITEMS} items, ~{events_per_epoch(args, jax)} events (>= {MIN_STEPS_PER_EPOCH} "
                    f"mini-batches) per epoch, sessions cut at "
                    f"{MAX_SESSION_LENGTH} events") + f", 1 warm-up + {args.epochs} measured epochs"
    print(f"gru4rec speed benchmark ({args.mode}) on {info['jax_device']} ({info['cpu']}, "
          f"{info['cpu_affinity']} cores); command: {info['command']}", flush=True)

    def log(line):
        print(line, flush=True)

    rows, evals = run_grid(args, jax, log)
    B, h = (80, 224) if (80, 224) in args.shape_list else args.shape_list[0]
    spec = {"B": B, "h": h, "K": max(args.k_list), "loss": args.loss_list[0], "n_items": N_ITEMS,
            "steps_per_epoch": MIN_STEPS_PER_EPOCH, "test_events": 2000}
    cache = None
    if args.cache_check and not args.no_cache:
        with tempfile.TemporaryDirectory(prefix="gru4rec-jax-cache-") as folder:
            cache = dict(spec, cold=run_child(args, dict(spec, what="compile", cache_dir=folder)))
            cache["warm"] = run_child(args, dict(spec, what="compile", cache_dir=folder))
        log(f"compile cold/warm: {cache['cold'].get('compile_seconds')} / {cache['warm'].get('compile_seconds')} s")
    million = None
    if args.million:
        million = dict(spec, n_items_big=args.million_items)
        million["base"] = run_child(args, dict(million, what="million"))
        log(f"million: base done ({million['base'].get('events_per_s')})")
        million["million"] = run_child(args, dict(million, what="million", n_items=args.million_items))
        if "error" not in million["base"] and "error" not in million["million"]:
            million["ratio"] = million["million"]["events_per_s"] / million["base"]["events_per_s"]
    info["load_average_end"] = os.getloadavg()
    info["wall_seconds"] = time.perf_counter() - started
    info["peak_memory"] = peak_memory(jax)
    print_report(info, rows, evals, cache, million)
    path = Path(args.json or ROOT / "bench" / "results" / f"speed-{info['jax_platform']}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": info, "train": rows, "eval": evals, "compile_cache": cache,
                                "million": million}, indent=1, default=str))
    print(f"  JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
