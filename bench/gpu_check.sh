#!/usr/bin/env bash
# GPU machine check for gru4rec, in one go and under 5 minutes (the recipe is in bench/README.md, "GPU machine"):
#   1. install the wheels carried in .whl/ (only those whose module is missing) into /tmp/site
#   2. show the GPU (nvidia-smi) and the devices JAX sees
#   3. run the test suite (python -m pytest -q tests -x; in parallel where pytest-xdist exists)
#   4. run bench/speed.py --quick
#   5. check that the GPU and the CPU give the same losses and weights (bench/compare_devices.py)
# On a machine without a GPU every step still runs (on the CPU) and the GPU-only parts say so.
#
# Usage, from the repository root (bench/README.md says how to download the wheels beforehand):
#   bash bench/gpu_check.sh
# Results go to $OUT when it is set (the device machine's output folder), else bench/results/.
# Time limits per step (seconds) can be changed: TEST_TIMEOUT=140 SPEED_TIMEOUT=90 COMPARE_TIMEOUT=50.
# Exit status: the number of failed steps (0 = all passed or skipped).
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-bench/results}
mkdir -p "$OUT_DIR"
START=$SECONDS
FAILED=0
SUMMARY=""
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

step() { echo; echo "=== [$((SECONDS - START)) s] $*"; }
record() {  # record NAME STATUS
    SUMMARY="$SUMMARY\n  $1: $2"
    if [ "$2" = FAIL ]; then FAILED=$((FAILED + 1)); fi
}
module_of() {  # wheel file -> importable module name
    local dist
    dist=$(basename "$1" | cut -d- -f1 | tr '[:upper:]' '[:lower:]')
    case "$dist" in
        python_dateutil) echo dateutil ;;
        pyyaml) echo yaml ;;
        *) echo "$dist" ;;
    esac
}

step "1. wheels from .whl/"
if ls .whl/*.whl >/dev/null 2>&1; then
    missing=()
    for wheel in .whl/*.whl; do
        module=$(module_of "$wheel")
        if [ "$module" = pytensor ] || ! "$PY" -c "import $module" >/dev/null 2>&1; then
            missing+=("$wheel")
        else
            echo "  $module is already installed: not installing $(basename "$wheel")"
        fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "  installing: ${missing[*]}"
        if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${missing[@]}"; then
            export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
            record wheels PASS
        else
            record wheels FAIL
        fi
    fi
else
    echo "  no .whl/ folder: using the installed packages"
    record wheels SKIP
fi
"$PY" - <<'EOF'
import importlib, sys
print("  python", sys.version.split()[0], sys.executable)
for name in ("numpy", "scipy", "pandas", "pytensor", "jax", "jaxlib", "tqdm", "pytest", "optuna"):
    try:
        module = importlib.import_module(name)
        print(f"  {name:<9s}{getattr(module, '__version__', '?')}  {getattr(module, '__file__', '')}")
    except Exception as err:  # noqa: BLE001
        print(f"  {name:<9s}MISSING ({type(err).__name__}: {err})")
EOF

step "2. devices"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || nvidia-smi
else
    echo "  nvidia-smi not found: no NVIDIA GPU here; the GPU-only checks below run on the CPU instead"
fi
"$PY" -c "import jax; print('  JAX devices:', jax.devices())"
HAS_GPU=$("$PY" -c "import jax; print(int(any(d.platform == 'gpu' for d in jax.devices())))" 2>/dev/null | tail -1)
if [ "$HAS_GPU" = 1 ]; then record gpu PASS; else echo "  JAX sees no GPU"; record gpu "SKIP (no GPU: CPU only)"; fi

step "3. tests"
PYTEST_ARGS=(-q -x tests -p no:cacheprovider)
if ! "$PY" -c "import optuna" >/dev/null 2>&1; then
    echo "  optuna is missing: skipping tests/test_paropt.py (bench/README.md: optional wheels)"
    PYTEST_ARGS+=(--ignore tests/test_paropt.py)
fi
if "$PY" -c "import xdist" >/dev/null 2>&1 && [ "$(nproc)" -ge 8 ]; then
    PYTEST_ARGS+=(-n 4)  # four processes share the GPU (no preallocation)
fi
if timeout "${TEST_TIMEOUT:-140}" "$PY" -m pytest "${PYTEST_ARGS[@]}" 2>&1 | tee "$OUT_DIR/gpu_check_tests.log" | tail -25; then
    record tests PASS
else
    echo "  tests failed or ran past ${TEST_TIMEOUT:-140} s (log: $OUT_DIR/gpu_check_tests.log)"
    record tests FAIL
fi

step "4. bench/speed.py --quick"
if timeout "${SPEED_TIMEOUT:-90}" "$PY" bench/speed.py --quick --json "$OUT_DIR/speed-quick.json" > "$OUT_DIR/gpu_check_speed.log" 2>&1; then
    sed -n '/^gru4rec speed (quick)/,$p' "$OUT_DIR/gpu_check_speed.log"
    record "speed --quick" PASS
else
    tail -30 "$OUT_DIR/gpu_check_speed.log"
    record "speed --quick" FAIL
fi

step "5. GPU vs CPU: same seed, same losses and weights"
if [ "$HAS_GPU" != 1 ]; then echo "  no GPU: both runs use the CPU (a determinism check only)"; fi
if timeout "${COMPARE_TIMEOUT:-50}" "$PY" bench/compare_devices.py 2>&1 | tee "$OUT_DIR/gpu_check_compare.log"; then
    record "gpu vs cpu" PASS
else
    record "gpu vs cpu" FAIL
fi

step "summary"
echo -e "$SUMMARY"
echo "  total $((SECONDS - START)) s; failed steps: $FAILED"
exit "$FAILED"
