"""bench/profile_step.py: the per-operation profile of a tiny fit adds up (numbers not checked)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a fresh process (XLA's dump flag must be set before JAX starts)
def test_profile_of_the_smoke_preset_splits_the_step_into_operations_and_host():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "profile_step.py"), "--preset", "smoke",
                          "--events", "600", "--top", "3"], capture_output=True, text=True, timeout=600, check=True).stdout
    assert "matrix products" in out and "no operation (Python, dispatch, sync)" in out
    shares = [float(x) for x in re.findall(r" (-?[\d.]+)%$", out, flags=re.M)]
    assert len(shares) >= 4 and sum(shares) == pytest.approx(200, abs=1.0)  # operation kinds; wall = ops + host
    assert len(re.findall(r"^\s+[\d.]+ ms  \S+", out, flags=re.M)) == 3
