"""Check that the default JAX device (a GPU where there is one) and the CPU train the same model.

Fits one small seeded model (about 40 mini-batches) in fresh processes: with ``JAX_PLATFORMS=cpu``
and with JAX's default platform, matrix products at full float32 precision
(``JAX_DEFAULT_MATMUL_PRECISION=highest``; a GPU may otherwise use TF32). Compares the epoch
losses and a few weights (the GRU weights, the first rows of the item matrix) at float32
tolerance. On a GPU it also reports, without failing, how far the default precision drifts. On a
machine without a GPU both runs use the CPU and the check becomes a determinism check (the
results must then agree exactly).

Usage (from the repository root)::

    python bench/compare_devices.py [--rtol 1e-4] [--atol 1e-5]

Exit status 0 when they agree, 1 when they do not.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARAMS = dict(loss="cross-entropy", final_act="softmax", logq=1.0, layers=(64,), batch_size=32, n_sample=256,
              constrained_embedding=True, momentum=0.2, n_epochs=2, steps_per_call=8, learning_rate=0.05,
              show_progress=False, seed=7)


def child(path):
    """Fit the model on this process's default JAX device; save losses and weights to `path`."""
    sys.path.insert(0, str(ROOT))
    import jax
    import numpy as np

    import gru4rec
    from gru4rec_lib import synthetic

    events = synthetic.generate_sessions(n_sessions=150, n_items=300, seed=3)
    model = gru4rec.GRU4Rec(**PARAMS).fit(events)
    saved = path + ".model.npz"
    model.save(saved)  # the public way to the weights: state/<name> arrays
    with np.load(saved, allow_pickle=False) as f:
        weights = {key[len("state/"):]: f[key] for key in f.files
                   if key[len("state/"):] in ("Wy", "By", "Wx_0", "Wh_0", "Bh_0")}
    if "Wy" in weights:
        weights["Wy"] = weights["Wy"][:50]
    np.savez(path, losses=np.asarray(model.epoch_losses_), **weights)
    print(json.dumps({"device": str(jax.devices()[0]), "losses": list(map(float, model.epoch_losses_))}))


def run(platform, path, precision="highest"):
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    env.pop("JAX_DEFAULT_MATMUL_PRECISION", None)
    if precision:
        env["JAX_DEFAULT_MATMUL_PRECISION"] = precision
    if platform:
        env["JAX_PLATFORMS"] = platform
    else:
        env.pop("JAX_PLATFORMS", None)
    result = subprocess.run([sys.executable, __file__, "--child", path], env=env, capture_output=True, text=True,
                            timeout=600)
    if result.returncode:
        raise SystemExit(f"the {platform or 'default'} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--atol", type=float, default=1e-5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    import numpy as np

    with tempfile.TemporaryDirectory() as folder:
        cpu_path, default_path = os.path.join(folder, "cpu.npz"), os.path.join(folder, "default.npz")
        cpu, default = run("cpu", cpu_path), run(None, default_path)
        print(f"cpu run: {cpu['device']}, losses {cpu['losses']}")
        print(f"default run: {default['device']}, losses {default['losses']}")
        same_device = "cpu" in default["device"].lower() and "cuda" not in default["device"].lower()
        if same_device:
            print("no GPU: both runs used the CPU, so this is a determinism check (expecting exact equality)")
        rtol, atol = (0.0, 0.0) if same_device else (args.rtol, args.atol)
        ok = compare(np.load(cpu_path), np.load(default_path), rtol, atol)
        if not same_device:
            fast_path = os.path.join(folder, "default-precision.npz")
            fast = run(None, fast_path, precision=None)
            print(f"default run, default matmul precision (information only): losses {fast['losses']}")
            compare(np.load(cpu_path), np.load(fast_path), args.rtol, args.atol)
    print("devices agree" if ok else f"devices DISAGREE beyond rtol={rtol}, atol={atol}")
    return 0 if ok else 1


def compare(a, b, rtol, atol):
    import numpy as np

    ok = True
    for key in a.files:
        diff = float(np.max(np.abs(a[key] - b[key]))) if a[key].size else 0.0
        close = bool(np.allclose(a[key], b[key], rtol=rtol, atol=atol))
        ok &= close
        print(f"  {key:<7s} max |cpu - default| = {diff:.3g}  {'ok' if close else 'DIFFERENT'}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
