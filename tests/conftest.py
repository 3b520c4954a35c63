import os
import sys
from pathlib import Path

import pytest
import torch

# Two threads per process is what CI's 2-core machine has; tests never run two heavy processes at once.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def venv_python() -> str:
    "The interpreter running the tests (a fresh process of it sees only the installed package)."
    return sys.executable


def pytest_collection_modifyitems(config, items):
    "Tests marked `cuda` are skipped where no CUDA device is visible."
    if torch.cuda.is_available(): return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords: item.add_marker(skip)
