"""Cost of `GRU4Rec.recommend` per session per call, for live-session serving.

A model with `--items` items and one GRU layer of `--hidden` units (random weights through
``load_state_dict``: speed does not depend on training) serves `--sessions` sessions in one call,
each getting one new item, top `--k`; the first call compiles and is not timed, then `--calls`
calls are timed (the result of each call is on the host when it returns: no pending device work).

    python bench/recommend.py --sessions 10000 --items 20000 --calls 5 --json out.json
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gru4rec  # noqa: E402
from gru4rec_lib import synthetic  # noqa: E402


def build_model(n_items, hidden, seed=0):
    """A fitted model with `n_items` items: one tiny fit for the structure, then random weights."""
    events = synthetic.generate_sessions(n_sessions=200, n_items=50, seed=seed)
    model = gru4rec.GRU4Rec(layers=(hidden,), n_epochs=0, n_sample=0, show_progress=False, seed=seed).fit(events)
    rng = np.random.default_rng(seed)
    state = {}
    current = model.state_dict() if hasattr(model, "state_dict") else {  # the baseline has no state_dict
        name: np.asarray(var.get_value()) for name, var in model._state.items()}
    for name, value in current.items():
        shape = (n_items,) + value.shape[1:] if value.ndim and value.shape[0] == model.n_items_ else value.shape
        state[name] = rng.normal(0, 0.1, shape).astype(np.float32) if "/" not in name and name != "step" \
            else np.zeros(shape, np.float32)
    if hasattr(model, "load_state_dict"):
        return model.load_state_dict(state, item_ids=np.arange(n_items))
    return _legacy_load(model, state, n_items)


def _legacy_load(model, state, n_items):
    """The same model through save/load for a library without load_state_dict (the baseline)."""
    import tempfile
    path = os.path.join(tempfile.mkdtemp(), "m.npz")
    arrays = {f"state/{k}": v for k, v in state.items()}
    arrays.update(format_version=np.array(1), item_ids=np.arange(n_items), support=np.ones(n_items),
                  epoch_losses=np.zeros(0), params_json=np.array(json.dumps(model.get_params())))
    np.savez(path, **arrays)
    return gru4rec.GRU4Rec.load(path)


def time_calls(model, n_sessions, n_calls, k, rng):
    sessions = [f"s{i}" for i in range(n_sessions)]
    items = rng.integers(0, model.n_items_, size=(n_calls + 1, n_sessions))
    model.recommend(sessions, list(items[0]), k=k)  # compile and warm up, off the clock
    seconds = []
    for call in range(1, n_calls + 1):
        started = time.perf_counter()
        ids, scores = model.recommend(sessions, list(items[call]), k=k)
        np.asarray(scores)  # on the host already; kept so that the timing never misses a sync
        seconds.append(time.perf_counter() - started)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    model = build_model(args.items, args.hidden)
    seconds = time_calls(model, args.sessions, args.calls, args.k, np.random.default_rng(1))
    best, median = min(seconds), float(np.median(seconds))
    result = {"sessions": args.sessions, "items": args.items, "hidden": args.hidden, "k": args.k,
              "calls": args.calls, "seconds_median": median, "seconds_best": best,
              "ms_per_session_median": 1000 * median / args.sessions, "machine": platform.processor() or
              platform.machine(), "cpus": os.cpu_count(), "load": os.getloadavg()[0],
              "library": os.path.abspath(gru4rec.__file__), "command": " ".join(sys.argv)}
    print(f"{args.sessions} sessions x {args.items} items, k={args.k}: median {median:.3f} s per call "
          f"(best {best:.3f} s), {result['ms_per_session_median']:.4f} ms per session per call; "
          f"load {result['load']:.2f} on {result['cpus']} CPUs")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
