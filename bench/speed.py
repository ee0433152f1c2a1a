"""Speed benchmark: training mini-batches/s and events/s, evaluation events/s, compile time.

A short timing core and a table of presets, on generated data (Zipf popularity, planted
successors) with an exact item count. For each preset and each ``steps_per_call`` K: build the
model, warm up (``fit`` compiles and runs two idle calls off the clock, then one warm-up epoch),
time the measured epochs (``fit`` times each epoch itself and synchronises on its last losses),
then evaluate once on a few sessions (it compiles) and time a second evaluation. Prints the
machine, the versions and the command, one line per measurement, and writes JSON. Not a test.

Usage (from the repository root)::

    python bench/speed.py --quick                       # presets xe,bprmax at K=1,64 (~1 min on 2 cores)
    python bench/speed.py --preset rsc15_xe,retailrocket_bprmax,diginetica_bprmax --steps 64
    python bench/speed.py --preset xe --items 1000000   # the 1M-item catalogue
    python bench/speed.py --list                        # the presets
"""
import argparse
import json
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmark the working tree
from gru4rec_lib import launch  # noqa: E402 (light: nothing heavy imported yet)

SHARED = dict(n_sample=2048, constrained_embedding=True, sample_alpha=0.75, learning_rate=0.05,
              show_progress=False, seed=42)
XE = dict(SHARED, loss="cross-entropy", final_act="softmax", logq=1.0)
BPRMAX = dict(SHARED, loss="bpr-max", final_act="elu-0.5")
PRESETS = {  # name -> model parameters, or the bundled parameter file they come from; items; events per epoch
    "xe": dict(params=dict(XE, layers=(224,), batch_size=80)),
    "bprmax": dict(params=dict(BPRMAX, layers=(224,), batch_size=80)),
    "xe_small": dict(params=dict(XE, layers=(100,), batch_size=32)),
    "bprmax_small": dict(params=dict(BPRMAX, layers=(100,), batch_size=32)),
    "xe_large_batch": dict(params=dict(XE, layers=(224,), batch_size=512)),
    "rsc15_xe": dict(paramfile="rsc15_xe_authors"),  # the published configurations' shapes
    "retailrocket_bprmax": dict(paramfile="retailrocket_bprmax"),
    "diginetica_bprmax": dict(paramfile="diginetica_bprmax"),
    "smoke": dict(params=dict(XE, layers=(16,), batch_size=8, n_sample=16), items=500, events=(2_000, 2_000)),
}
ITEMS, EVENTS = 40_000, (30_000, 400_000)  # defaults: items; training events per epoch on a CPU, on a GPU
QUICK = dict(preset="xe,bprmax", steps="1,64")
MAX_SESSION_LENGTH = 10  # short sessions keep an epoch's ragged tail short


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="xe", help=f"comma-separated among: {', '.join(PRESETS)}")
    parser.add_argument("--quick", action="store_true", help="--preset xe,bprmax --steps 1,64")
    parser.add_argument("--list", action="store_true", help="print the presets and exit")
    parser.add_argument("--steps", default="64", help="comma-separated steps_per_call K (default 64)")
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs, after one warm-up epoch")
    parser.add_argument("--items", type=int, help="catalogue size (default per preset, mostly 40,000)")
    parser.add_argument("--events", type=int, help="training events per epoch (default per preset and device)")
    parser.add_argument("--test-events", type=int, default=20_000, help="evaluation events (0: no evaluation)")
    parser.add_argument("--params", default="", help="extra model parameters, e.g. 'momentum=0.3,n_sample=1024'")
    parser.add_argument("--device", choices=["cpu", "gpu"], help="model device (default: JAX's default)")
    parser.add_argument("--cpus", type=int, help="restrict the process to this many CPU cores")
    parser.add_argument("--cache", default=str(ROOT / "bench" / "results" / "jax-cache"),
                        help="persistent compilation cache folder ('' to turn it off)")
    parser.add_argument("--json", help="write the results here (default bench/results/speed-<platform>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.steps = QUICK["preset"], QUICK["steps"]
    args.names = [name for name in args.preset.split(",") if name]
    unknown = [name for name in args.names if name not in PRESETS]
    if unknown:
        parser.error(f"unknown presets {unknown}; use {list(PRESETS)}")
    args.k_list = [int(k) for k in args.steps.split(",") if k]
    if args.epochs < 1 or not args.k_list or min(args.k_list) < 1:
        parser.error("need --epochs >= 1 and steps_per_call values >= 1")
    return args


def machine(jax, args):
    """CPU, device, versions, command and load: printed above the numbers and kept in the JSON."""
    import numpy
    import pytensor

    import gru4rec

    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                   cpu)
    device = jax.devices()[0]
    return {"mode": "quick" if args.quick else args.preset, "cpu": cpu, "cores": len(os.sched_getaffinity(0)),
            "device": f"{device} {getattr(device, 'device_kind', '')}", "platform": device.platform,
            "versions": f"python {platform.python_version()}, pytensor {pytensor.__version__}, jax {jax.__version__}, "
                        f"numpy {numpy.__version__}, gru4rec {gru4rec.__version__}",
            "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
            "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def preset_params(name, args):
    """Model parameters of a preset (a bundled parameter file for the published ones) and --params."""
    import gru4rec
    from gru4rec_lib import params as paramtext

    defaults, preset = gru4rec.GRU4Rec().get_params(), PRESETS[name]
    values = dict(preset.get("params", {}))
    if "paramfile" in preset:
        values = dict(SHARED, **paramtext.read_param_file(paramtext.bundled_file(preset["paramfile"], "paramfiles"),
                                                          defaults))
    if args.device:
        values["device"] = args.device
    values.update(paramtext.parse_param_string(args.params, defaults) if args.params else {})
    return dict(values, show_progress=False)


def generated_data(n_items, n_events, seed):
    """Sessions of at most MAX_SESSION_LENGTH events, the first ones holding about n_events pairs."""
    import numpy as np

    from gru4rec_lib import synthetic

    events = synthetic.generate_sessions(n_sessions=n_events // 3 + 200, n_items=n_items, seed=seed)
    events = events[events.groupby("SessionId", sort=False).cumcount().to_numpy() < MAX_SESSION_LENGTH]
    pairs = np.cumsum(events.groupby("SessionId", sort=False).size().to_numpy() - 1)
    keep = events.SessionId.unique()[: int(np.searchsorted(pairs, n_events)) + 1]
    return events[events.SessionId.isin(keep)]


def catalogue(n_items):
    """One 2-event session per pair of items: a model fitted on it (no epoch) knows them all."""
    import numpy as np
    import pandas as pd

    ids = np.arange(n_items + n_items % 2) % n_items
    return pd.DataFrame({"SessionId": np.arange(len(ids)) // 2, "ItemId": ids, "Time": np.arange(len(ids), dtype=float)})


def measure(name, K, args, jax):
    """Warm up, time the epochs and an evaluation: one row of the table."""
    import evaluation
    import gru4rec

    preset, cpu = PRESETS[name], jax.devices()[0].platform == "cpu"
    n_items = args.items or preset.get("items", ITEMS)
    n_events = args.events or preset.get("events", EVENTS)[0 if cpu else 1]
    params = preset_params(name, args)
    model = gru4rec.GRU4Rec(**dict(params, n_epochs=0, steps_per_call=1)).fit(catalogue(n_items))
    train = generated_data(n_items, max(n_events, 60 * params["batch_size"]), seed=0)
    model.set_params(n_epochs=1 + args.epochs, steps_per_call=K).fit(train, retrain=True)
    measured = model.epoch_stats_[1:]
    row = {"preset": name, "K": K, "B": params["batch_size"], "layers": list(params["layers"]),
           "loss": params["loss"], "n_items": model.n_items_, "events_per_epoch": int(measured[0]["events_per_s"]
                                                                                  * measured[0]["seconds"]),
           "batches_per_s": _median([s["batches_per_s"] for s in measured]),
           "events_per_s": _median([s["events_per_s"] for s in measured]), "compile_s": model.compile_seconds_}
    floor = step_floor(params, args.limits)
    row.update(floor_ms=floor * 1e3, floor_share=row["batches_per_s"] * floor)
    if args.test_events:
        test = generated_data(n_items, args.test_events, seed=1)
        first = evaluation.evaluate(model, test[test.SessionId.isin(test.SessionId.unique()[:40])])  # compiles
        timed = evaluation.evaluate(model, test)
        row.update(eval_events_per_s=timed["n_points"] / timed["seconds"], eval_first_call_s=first["seconds"])
    row["peak_memory_gib"] = _peak_memory(jax) / 2 ** 30
    return row


def machine_limits():
    """(memory bandwidth in bytes/s, matrix-product rate in FLOP/s) of this CPU, measured with numpy:
    a 256 MB copy (read + write) and a 1024 x 1024 float32 product, best of 5."""
    import numpy as np

    src, a = np.ones(64 * 2 ** 20, np.float32), np.ones((1024, 1024), np.float32)
    dst, best_copy, best_dot = np.empty_like(src), float("inf"), float("inf")
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(dst, src)
        best_copy = min(best_copy, time.perf_counter() - t)
        t = time.perf_counter()
        a @ a
        best_dot = min(best_dot, time.perf_counter() - t)
    return 2 * src.nbytes / best_copy, 2 * 1024 ** 3 / best_dot


def step_floor(params, limits):
    """Lower bound on the seconds of one training step: the larger of its memory traffic over the
    bandwidth and its matrix products over the product rate.

    Traffic: every touched item row (B inputs, B targets, n_sample negatives) is read and written
    once, with its optimiser state (Adagrad's accumulator; the velocity with momentum), and so are
    the GRU's dense weights and their state. Products: scores, their two gradients, and the GRU's
    input/recurrent products with their gradients (3 times the forward FLOPs).
    """
    bandwidth, rate = limits
    B, S, layers = params["batch_size"], params.get("n_sample", 2048), list(params["layers"])
    copies = 1 + (params.get("adapt", "adagrad") is not None) + bool(params.get("momentum"))
    h_out, emb = layers[-1], params.get("embedding") or layers[-1]
    rows = (2 * B + S) * h_out
    dense, flops, width = 0, 2 * B * (B + S) * h_out * 3, emb
    for h in layers:
        dense += (width + h + 1) * 3 * h
        flops += 2 * B * (width + h) * 3 * h * 3
        width = h
    traffic = 2 * 4 * copies * (rows + dense)  # float32, read + write
    return max(traffic / bandwidth, flops / rate)


def _median(values):
    values = sorted(values)
    return 0.5 * (values[(len(values) - 1) // 2] + values[len(values) // 2])


def _peak_memory(jax):
    """Peak device memory on an accelerator, else the process's peak RSS (bytes)."""
    stats = jax.devices()[0].memory_stats() if jax.devices()[0].platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"]
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def line(row):
    text = (f"  {row['preset']:<20s} B={row['B']:<4d} h={'/'.join(map(str, row['layers'])):<5s} K={row['K']:<3d} "
            f"{row['batches_per_s']:9.1f} mini-batches/s {row['events_per_s']:9.0f} events/s  "
            f"compile {row['compile_s']:5.1f} s  peak {row['peak_memory_gib']:.2f} GiB  "
            f"floor {row['floor_ms']:.2f} ms/step ({row['floor_share']:.0%} of it reached)")
    if "eval_events_per_s" in row:
        text += f"  evaluate {row['eval_events_per_s']:8.0f} events/s"
    return text


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        for name, preset in PRESETS.items():
            print(f"{name:<20s} {preset.get('paramfile') or preset['params']}")
        return 0
    if args.cpus:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cpus])
    import jax

    from gru4rec_lib import backend

    if args.cache:
        backend.enable_compilation_cache(args.cache)
    info = machine(jax, args)
    args.limits = machine_limits()
    info.update(memory_bandwidth_gb_s=args.limits[0] / 1e9, matmul_gflop_s=args.limits[1] / 1e9)
    print(f"gru4rec speed ({info['mode']}), {info['date']}\n  machine: {info['cpu']}, {info['cores']} cores; "
          f"device {info['device']}\n  versions: {info['versions']}\n  command: {info['command']}\n"
          f"  load average {tuple(round(x, 1) for x in info['load_average'])} (above the core count: "
          f"the numbers are low and noisy); compilation cache: {args.cache or 'off'}; "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r} (gru4rec_lib/launch.py)\n"
          f"  floor of a step: memory {info['memory_bandwidth_gb_s']:.1f} GB/s, products "
          f"{info['matmul_gflop_s']:.0f} GFLOP/s (numpy, measured now)", flush=True)
    started, rows = time.perf_counter(), []
    for name in args.names:
        for K in args.k_list:
            rows.append(measure(name, K, args, jax))
            print(line(rows[-1]), flush=True)
    info.update(wall_s=time.perf_counter() - started, load_average_end=os.getloadavg())
    print(f"  wall time {info['wall_s']:.0f} s; load average at the end "
          f"{tuple(round(x, 1) for x in info['load_average_end'])}")
    path = Path(args.json or ROOT / "bench" / "results" / f"speed-{info['platform']}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    print(f"  JSON: {path}")
    return 0


if __name__ == "__main__":
    launch.with_huge_pages()  # as the gru4rec command runs: huge pages for large catalogues
    sys.exit(main())
