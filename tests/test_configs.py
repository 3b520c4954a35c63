"""The paper's recipes in configs/: every file is a valid config of the whole protocol, and each runs every stage in
smoke mode on small files written in the real on-disk formats (CIFAR pickled batches, SVHN .mat, Tiny-ImageNet JPEGs)."""
import itertools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from conftest import ROOT
from robust_prune.config import MRPFConfig
from test_data_formats import _write_cifar, _write_tiny

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
EXE = shutil.which("robust-prune")
# in the test command: every network and every data set once; the other eight with ROBUST_PRUNE_SLOW=1
FAST = {"resnet18_cifar10", "vgg16_bn_cifar100", "mobilevit_xs_svhn", "resnet18_tinyimagenet"}


def test_configs_hold_the_protocol_for_every_network_and_data_set():
    configs = {p.stem: MRPFConfig.load(p) for p in CONFIGS}  # each one validates
    assert {(c.arch, c.dataset) for c in configs.values()} == set(itertools.product(
        ["resnet18", "vgg16_bn", "mobilevit_xs"], ["cifar10", "cifar100", "svhn", "tiny-imagenet"]))
    for name, c in configs.items():
        assert (c.mrs_method, c.rule, c.sparsity, c.method, c.beta) == ("mrs", "per-param", 0.5, "trades", 6.0), name
        assert c.checkpoint is None and c.train_epochs > 0 and c.epochs > 0, name  # the dense model is trained first
        assert c.eval_attacks == ["autoattack:eps=8/255"] and c.output_dir == f"runs/{name}", name
    assert FAST <= set(configs)


def _write_svhn(root, n=8):
    folder = root / "svhn"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for split in ("train", "test"):
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                                         "y": rng.integers(1, 11, (n, 1)).astype(np.uint8)})


WRITERS = {"cifar10": _write_cifar, "cifar100": lambda root: _write_cifar(root, hundred=True), "svhn": _write_svhn,
           "tiny-imagenet": _write_tiny}


@pytest.mark.skipif(EXE is None, reason="the robust-prune console script is not installed (pip install -e .)")
@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem, marks=() if p.stem in FAST else pytest.mark.slow) for p in CONFIGS])
def test_a_config_runs_every_stage_in_smoke_mode(path, tmp_path):
    config = MRPFConfig.load(path)
    WRITERS[config.dataset](tmp_path / "data")
    out = tmp_path / "run"
    res = subprocess.run([EXE, "run", "--config", str(path), "--smoke", "--data-root", str(tmp_path / "data"), "--out", str(out),
                          "--device", "cpu", "--quiet"], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Smoke run of" in res.stderr and "artefacts in" in res.stdout
    report = json.loads((out / "report.json").read_text())
    ran = report["config"]
    for k in ("arch", "dataset", "sparsity", "rule", "criterion", "method", "beta", "optimizer", "schedule", "lr"):
        assert ran[k] == getattr(config, k), k  # the config's protocol, only smaller
    assert (ran["train_samples"], ran["train_epochs"], ran["epochs"], ran["mrs_method"]) == (64, 1, 1, "taylor")
    assert set(report["reports"]) == {"uniform", "MRPF (per-param)"} and report["histories"]["uniform"]["epochs"]
    for r in report["reports"].values():
        assert r["params"] < report["dense"]["params"] and 0 <= r["clean_acc"] <= 1
