import os
import sys
from pathlib import Path

import pytest
import torch

# Two threads per process is what CI's 2-core machine has; tests never run two heavy processes at once.
# OMP_NUM_THREADS, where set, wins (`make mutate` runs two test processes side by side, one thread each).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, os.cpu_count() or 1))))

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def venv_python() -> str:
    "The interpreter running the tests (a fresh process of it sees only the installed package)."
    return sys.executable


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long checks (wide model sweeps); run with ROBUST_PRUNE_SLOW=1")


def pytest_collection_modifyitems(config, items):
    "Tests marked `slow` run only with ROBUST_PRUNE_SLOW=1; tests marked `cuda` only where a CUDA device is visible."
    skips = []
    if os.environ.get("ROBUST_PRUNE_SLOW") != "1": skips.append(("slow", "slow: set ROBUST_PRUNE_SLOW=1 to run"))
    if not torch.cuda.is_available(): skips.append(("cuda", "needs a CUDA device"))
    for item in items:
        for key, reason in skips:
            if key in item.keywords: item.add_marker(pytest.mark.skip(reason=reason))
