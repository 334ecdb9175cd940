"""``helpers`` itself: the notebook-facing names, loaded on first use."""

import subprocess
import sys

import pytest

import helpers


def test_every_notebook_name_resolves_to_its_module():
    for name, module in helpers.NOTEBOOK_API.items():
        value = getattr(helpers, name)
        assert value is getattr(sys.modules[f"helpers.{module}"], name), name
    assert set(helpers.NOTEBOOK_API) <= set(helpers.__all__) and set(helpers.__all__) <= set(dir(helpers))
    assert len(helpers.__all__) == len(set(helpers.__all__))  # no name twice


def test_unknown_names_are_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'no_such_helper'"):
        helpers.no_such_helper  # noqa: B018
    with pytest.raises(ImportError):
        from helpers import no_such_helper  # noqa: F401


def test_importing_helpers_loads_no_plotting_or_graph_library():
    code = ("import sys, helpers; from helpers import prepare, get_experiment; "
            "print(sorted(m for m in ('matplotlib', 'pandas', 'networkx', 'sae_lens') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
