"""`finetune` and `evaluate` under torchrun: 2 processes (gloo, CPU) give the 1-process result, and resume works."""
import json
import math
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


def test_a_killed_rank_ends_the_job_with_an_error_and_the_rerun_resumes_to_the_uninterrupted_weights(one_and_two, tmp_path):
    import time
    _, two = one_and_two
    ck, steps = tmp_path / "ck", ["--checkpoint-steps", "2"]
    t = time.time()
    res = torchrun(2, tmp_path / "killed.json", "--batch", "8", "--checkpoint-dir", str(ck), *steps, "--kill-rank", "1",
                   "--kill-at-step", "9", check=False)  # 6 steps per epoch: rank 1 dies at batch 3 of epoch 2
    assert res.returncode != 0 and time.time() - t < 100, res.stderr[-2000:]
    assert "SIGKILL" in res.stderr, res.stderr[-2000:]  # torchrun names the lost process, the other rank is stopped
    assert not (tmp_path / "killed.json").exists() and (ck / "last.pt").is_file()
    resumed = torchrun(2, tmp_path / "res.json", "--batch", "8", "--checkpoint-dir", str(ck), *steps, "--resume")
    assert resumed["history"]["resumed"] == [{"epoch": 2, "batch": 2}]  # from the last checkpoint inside epoch 2
    assert (torch.tensor(resumed["weights"]) - torch.tensor(two["weights"])).abs().max() < WEIGHT_TOL


def test_with_batch_norm_every_rank_ends_an_epoch_with_the_same_weights_and_buffers(tmp_path):
    # parameters are kept equal by DDP; batch-norm statistics are not broadcast at every forward (TRADES runs the model
    # twice before backward, and on a GPU that broadcast rewrote a tensor autograd still needed), so each epoch ends
    # with rank 0's statistics copied to every rank: the two ranks' models must be identical, buffers included
    two = torchrun(2, tmp_path / "bn.json", "--arch", "digits_resnet", "--method", "trades", "--batch", "8", "--epochs", "1",
                   "--every-rank")
    assert two["world"] == 2 and all(math.isfinite(e["loss"]) for e in two["history"]["epochs"])
    r0, r1 = (json.loads((tmp_path / f"bn.json.rank{r}").read_text()) for r in (0, 1))
    assert len(r0) == len(r1) > 0 and r0 == r1


CLI_RUN = ["run", "--epochs", "1", "--mrs-method", "taylor", "--mrs-samples", "64", "--eval-samples", "64",
           "--eval-attack", "pgd:eps=0.1,steps=2", "--device", "cpu", "--quiet"]


def launch(nproc: int | None, *args):
    "The `robust-prune` command in one process, or under torchrun with `nproc` processes (`python -m torch.distributed.run -m robust_prune.cli`)."
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    start = ([sys.executable, "-m", "robust_prune.cli"] if nproc is None else
             [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone", "-m", "robust_prune.cli"])
    res = subprocess.run([*start, *args], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def cli(nproc: int | None, out, *extra):
    res = launch(nproc, *CLI_RUN, "--out", str(out), *extra)
    return res, json.loads((out / "report.json").read_text())


def test_robust_prune_run_under_torchrun_writes_once_and_resumes(tmp_path):
    res1, one = cli(None, tmp_path / "one")
    res2, two = cli(2, tmp_path / "two")
    assert res2.stdout.count("artefacts in") == 1 and res2.stdout.count("MRPF") == res1.stdout.count("MRPF")  # rank 0 alone prints
    assert (one["provenance"]["processes"], two["provenance"]["processes"]) == (1, 2)
    assert accuracy(one["dense"]) == accuracy(two["dense"])  # the test set split over two ranks, counts summed: the 1-process numbers
    assert scores(one) == scores(two) and ratios(one) == ratios(two)  # the same scores, the same pruned shapes
    assert all(math.isfinite(r["clean_acc"]) for r in two["reports"].values())
    res3, again = cli(2, tmp_path / "two")  # the same command again: every stage is reused
    assert res3.stderr.count("Resuming:") >= 4 and again["provenance"]["resumed"], res3.stderr[-2000:]
    assert {k: accuracy(r) for k, r in again["reports"].items()} == {k: accuracy(r) for k, r in two["reports"].items()}


def accuracy(r): return r["n_samples"], r["clean_acc"], r["robust_acc"], r["params"], r["macs"]
def scores(result): return {g["name"]: g["score"] for g in result["mrs"]["groups"]}
def ratios(result): return {k: a["ratios"] for k, a in result["allocations"].items()}


def test_mrs_under_torchrun_splits_the_groups_and_gives_the_one_process_report(tmp_path):
    args = ["mrs", "--mrs-method", "noise", "--mrs-samples", "64", "--device", "cpu", "--quiet"]
    one, two = launch(None, *args, "--json", str(tmp_path / "one.json")), launch(2, *args, "--json", str(tmp_path / "two.json"))
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    rows = lambda r: [(g["name"], g["score"], g["alpha"], g["sigma"]) for g in r["groups"]]
    assert len(rows(a)) == 9 and rows(a) == rows(b)  # every group scored, as one process scores it
    assert a["forwards"] == b["forwards"]  # each group scored once, by one of the two processes
    assert two.stdout.count("MRSReport") == one.stdout.count("MRSReport") == 1


def test_train_and_evaluate_under_torchrun_write_once_and_count_every_test_image_once(tmp_path):
    ck = tmp_path / "model.pt"
    trained = launch(2, "train", "--epochs", "1", "--attack", "pgd:eps=0.1,steps=2", "--out", str(ck), "--device", "cpu")
    assert trained.stdout.count(f"saved {ck}") == 1 and ck.is_file()
    ev = ["evaluate", "--checkpoint", str(ck), "--max-samples", "100", "--attack", "pgd:eps=0.1,steps=2,random_start=false",
          "--device", "cpu"]
    one, two = launch(None, *ev, "--json", str(tmp_path / "one.json")), launch(2, *ev, "--json", str(tmp_path / "two.json"))
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    assert a["n_samples"] == b["n_samples"] == 100 and a["robust_acc"].keys() == b["robust_acc"].keys()
    for x, y in [(a["clean_acc"], b["clean_acc"]), *((a["robust_acc"][k], b["robust_acc"][k]) for k in a["robust_acc"])]:
        assert abs(x - y) < 1e-6  # the same counts (one process divides in float32)
    assert two.stdout.count("clean") == one.stdout.count("clean") > 0  # rank 0 alone prints the table
    assert b["provenance"]["processes"] == 2


def test_sync_bn_on_cpus_is_refused_before_anything_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m", "robust_prune.cli",
           *CLI_RUN, "--sync-bn", "--out", str(tmp_path / "out")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode != 0
    errors = [l for l in res.stderr.splitlines() if l.startswith("robust-prune run: error:")]
    assert errors and all("sync_bn needs GPUs: SyncBatchNorm runs on CUDA devices only" in l for l in errors), res.stderr[-2000:]
    assert "robust_prune/" not in res.stderr  # no traceback through the package (torchrun prints its own about the failed processes)
    assert not list((tmp_path / "out").rglob("*.json"))  # refused before the dense evaluation
