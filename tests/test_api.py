"""The top-level API: `from robust_prune import ...` gives the modules' own objects, imported on first use."""
import importlib
import subprocess
import sys

import pytest

import robust_prune


def test_every_top_level_name_is_the_module_object():
    for name, module in robust_prune._API.items():
        if name == module: continue  # `finetune`: below
        assert getattr(robust_prune, name) is getattr(importlib.import_module(f"robust_prune.{module}"), name), name
    assert set(robust_prune._API) <= set(dir(robust_prune))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        robust_prune.nothing


def test_importing_the_package_does_not_import_torch():
    code = ("import sys, robust_prune; assert 'torch' not in sys.modules, 'torch imported'; "
            "from robust_prune import compute_mrs; assert 'torch' in sys.modules; "
            "import robust_prune.widgets, robust_prune.pipeline, robust_prune.cli; "
            "assert 'fastcore' not in sys.modules, 'fastcore imported at run time'; print(compute_mrs.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "robust_prune.mrs"


@pytest.mark.parametrize("first", ["", "import robust_prune.evaluation; "])
def test_top_level_finetune_trains_whether_or_not_its_module_was_imported_first(first):
    # `robust_prune.finetune` is both a submodule and the training function: either way the name can be called
    code = (first + "import torch; from robust_prune import finetune, create_model, get_loaders; "
            "dls = get_loaders('digits', batch_size=64, train_subset=64, seed=0); net = create_model('digits_resnet', dls.info, width=4); "
            "h = finetune(net, dls.train, method='clean', epochs=1, progress=False); print(len(h), h.method)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "clean"]
