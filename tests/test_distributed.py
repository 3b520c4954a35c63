"""`finetune` and `evaluate` under torchrun: 2 processes (gloo, CPU) give the 1-process result, and resume works."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

# Deterministic attacks (no random start) and a network without batch norm: then the only difference between one
# process with batch 16 and two with batch 8 each is the order of float additions (gradients are averaged by
# all-reduce instead of inside one batch), so the weights agree to float rounding.
RUN = ["--arch", "plain_cnn", "--device", "cpu", "--size", "16", "--train-images", "96", "--test-images", "40", "--epochs", "2",
       "--method", "pgd-at", "--attack", "pgd:eps=0.1,steps=2,random_start=false",
       "--eval-attack", "pgd:eps=0.1,steps=2,random_start=false", "--lr", "0.1"]
WEIGHT_TOL = 1e-5  # largest absolute difference of any weight after 2 epochs (12 steps)


def torchrun(nproc: int, out, *extra, check=True):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone",
           str(ROOT / "benchmarks" / "ddp_epoch.py"), *RUN, "--json", str(out), *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    if check: assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text()) if res.returncode == 0 else res


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    return torchrun(1, d / "one.json", "--batch", "16"), torchrun(2, d / "two.json", "--batch", "8")


def test_two_gloo_processes_train_to_the_one_process_weights(one_and_two):
    one, two = one_and_two
    assert (one["world"], two["world"]) == (1, 2)
    w1, w2 = torch.tensor(one["weights"]), torch.tensor(two["weights"])
    assert (w1 - w2).abs().max() < WEIGHT_TOL


def test_two_processes_report_the_one_process_metrics(one_and_two):
    one, two = one_and_two
    for a, b in zip(one["history"]["epochs"], two["history"]["epochs"]):
        assert abs(a["loss"] - b["loss"]) < 1e-5
        for k in ("train_acc", "clean_acc", "robust_acc"): assert abs(a[k] - b[k]) < 1e-6, k  # same counts (float32 division on one side)
    r1, r2 = one["report"], two["report"]
    assert r1["n_samples"] == r2["n_samples"] == 40  # the test set is split between the ranks, each sample counted once
    assert abs(r1["clean_acc"] - r2["clean_acc"]) < 1e-6
    assert all(abs(r1["robust_acc"][k] - r2["robust_acc"][k]) < 1e-6 for k in r1["robust_acc"])


def test_two_process_run_resumes_to_the_uninterrupted_weights(one_and_two, tmp_path):
    _, two = one_and_two
    part = torchrun(2, tmp_path / "part.json", "--batch", "8", "--checkpoint-dir", str(tmp_path / "ck"), "--stop-after", "1")
    assert len(part["history"]["epochs"]) == 1 and (tmp_path / "ck" / "last.pt").is_file()
    resumed = torchrun(2, tmp_path / "res.json", "--batch", "8", "--checkpoint-dir", str(tmp_path / "ck"), "--resume")
    assert len(resumed["history"]["epochs"]) == 2
    assert (torch.tensor(resumed["weights"]) - torch.tensor(two["weights"])).abs().max() < WEIGHT_TOL
