"""The installed layout: only gru4rec.py, evaluation.py and the gru4rec_lib package, with its data files."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory):
    # build from a copy: setuptools reuses a build/ folder, whose stale files would hide a packaging mistake
    source, out = tmp_path_factory.mktemp("source") / "gru4rec", tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, source, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", "build", "dist", "out", ".whl", "*.egg-info", "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("gru4rec-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_wheel_installs_two_modules_and_one_package(wheel_names):
    top = {name.split("/")[0] for name in wheel_names if ".dist-info" not in name.split("/")[0]}
    assert top == {"gru4rec.py", "evaluation.py", "gru4rec_lib"}


def test_wheel_ships_parameter_files_and_spaces(wheel_names):
    bundled = {name for name in wheel_names if name.startswith("gru4rec_lib/param")}
    assert "gru4rec_lib/paramfiles/rsc15_xe.txt" in bundled
    assert "gru4rec_lib/paramspaces/xe_shared.txt" in bundled
    files = {p.name for p in (ROOT / "gru4rec_lib" / "paramfiles").glob("*.txt")}
    assert {Path(name).name for name in bundled if "/paramfiles/" in name} == files


def test_wheel_declares_both_commands(wheel_names):
    (entry,) = [name for name in wheel_names if name.endswith("entry_points.txt")]
    lines = {line.replace(" ", "") for line in wheel_names[entry].decode().splitlines()}
    assert {"gru4rec=gru4rec_lib.launch:command", "gru4rec-tune=gru4rec_lib.tune:main",
            "gru4rec-split=gru4rec_lib.splits:main"} <= lines


def test_bundled_parameter_file_by_name_and_by_path():
    from gru4rec_lib import params
    by_name = params.bundled_file("rsc15_xe", "paramfiles")
    assert Path(by_name).read_text() == (ROOT / "gru4rec_lib" / "paramfiles" / "rsc15_xe.txt").read_text()
    assert params.bundled_file("paramfiles/rsc15_xe.txt", "paramfiles")
    with pytest.raises(ValueError, match="no bundled paramfiles file.*rsc15_xe"):
        params.bundled_file("no_such_file", "paramfiles")
