"""The top-level API: `from robust_prune import ...` gives the modules' own objects, imported on first use."""
import importlib
import subprocess
import sys

import pytest

import robust_prune


def test_every_top_level_name_is_the_module_object():
    for name, module in robust_prune._API.items():
        assert getattr(robust_prune, name) is getattr(importlib.import_module(f"robust_prune.{module}"), name), name
    assert set(robust_prune._API) <= set(dir(robust_prune))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        robust_prune.nothing


def test_importing_the_package_does_not_import_torch():
    code = ("import sys, robust_prune; assert 'torch' not in sys.modules, 'torch imported'; "
            "from robust_prune import compute_mrs; assert 'torch' in sys.modules; print(compute_mrs.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "robust_prune.mrs"
