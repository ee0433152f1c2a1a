"""The start of the gru4rec command: glibc asked for huge pages once, before anything is imported."""
import os
import subprocess
import sys
from pathlib import Path

from gru4rec_lib import launch

ROOT = Path(__file__).resolve().parents[1]


def test_the_environment_adds_the_huge_pages_setting_once():
    env = launch.huge_pages_environment({"PATH": "/bin"}, "linux")
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    other = launch.huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "linux")
    assert other["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"  # the user's kept
    assert launch.huge_pages_environment(env, "linux") is None  # set: no second start
    assert launch.huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "linux") is None
    assert launch.huge_pages_environment({"GRU4REC_HUGE_PAGES": "off"}, "linux") is None
    assert launch.huge_pages_environment({}, "darwin") is None


def _run(code, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "GRU4REC_HUGE_PAGES")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**environ, **env}, check=True, timeout=60)
    return result.stdout.splitlines()


def test_a_process_starts_again_with_huge_pages_and_its_own_command_line():
    """The same command line (here ``python -c``), run once more with the setting, then as usual."""
    code = ("import os, sys; print('start', os.environ.get('GLIBC_TUNABLES')); sys.stdout.flush(); "
            "from gru4rec_lib import launch; launch.with_huge_pages(); print('after', sys.argv)")
    lines = _run(code)
    if sys.platform.startswith("linux"):
        assert lines == ["start None", "start glibc.malloc.hugetlb=1", "after ['-c']"]
    assert _run(code, GRU4REC_HUGE_PAGES="off") == ["start None", "after ['-c']"]
