"""Test helper: import a script of the repository (bench/, examples/) by its path, as a module."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative, name=None):
    """The module of the script at `relative` (to the repository root), run once as an import."""
    spec = importlib.util.spec_from_file_location(name or Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
