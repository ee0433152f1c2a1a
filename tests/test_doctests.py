"""The examples in the docstrings run and print what they show."""
import doctest
import importlib

import pytest

MODULES = ["gru4rec", "evaluation"] + [f"gru4rec_lib.{name}" for name in
                                       ("sessiondata", "sampling", "synthetic", "baselines", "params", "backend", "live",
                                        "callbacks", "splits")]


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.slow
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
