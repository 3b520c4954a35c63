"""`finetune(profile=True)`: every second of an epoch lands in the stage that spent it (data, attack, forward/backward,
optimizer, evaluation, checkpoint), nested stages counted once."""
import time

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from robust_prune.finetune import PROFILE_STAGES, History, finetune

EVAL_SLEEP, ITEM_SLEEP, BATCHES, STEPS = 0.02, 0.004, 4, 2


class SleepyNet(nn.Module):
    "A linear classifier that sleeps in every eval-mode forward (the inner attack's and the evaluation's), never in train mode."
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 10)
    def forward(self, x):
        if not self.training: time.sleep(EVAL_SLEEP)
        return self.fc(x.flatten(1))


class SlowImages(Dataset):
    "Random 3x8x8 images that take ITEM_SLEEP seconds each to load."
    def __init__(self, n): self.x, self.y = torch.rand(n, 3, 8, 8), torch.arange(n) % 10
    def __len__(self): return len(self.y)
    def __getitem__(self, i):
        time.sleep(ITEM_SLEEP)
        return self.x[i], self.y[i]


def _profiled(tmp_path, method="pgd-at", **kw):
    torch.manual_seed(0)
    train = DataLoader(SlowImages(8 * BATCHES), batch_size=8, shuffle=True)
    test = DataLoader(SlowImages(16), batch_size=16)
    return finetune(SleepyNet(), train, test, method=method, attack=f"pgd:eps=0.1,steps={STEPS}", epochs=1, eval_samples=16,
                    progress=False, profile=True, checkpoint_dir=tmp_path, **kw)


def test_each_stage_is_charged_with_the_time_it_spent_and_nested_stages_count_once(tmp_path):
    hist = _profiled(tmp_path)
    (p,) = hist.profile
    assert p["epoch"] == 1 and p["batches"] == BATCHES
    # the attack's eval-mode forwards sleep STEPS x EVAL_SLEEP per batch; they run inside forward/backward, and count as attack only
    assert p["attack"] >= BATCHES * STEPS * EVAL_SLEEP
    assert p["forward/backward"] < BATCHES * EVAL_SLEEP, p  # train-mode forwards never sleep
    # loading 8 images sleeps 8 x ITEM_SLEEP per batch; the evaluation loads 16 and runs its forwards (clean, then PGD) in eval mode
    assert p["data"] >= BATCHES * 8 * ITEM_SLEEP
    assert p["evaluation"] >= 16 * ITEM_SLEEP + (1 + STEPS) * EVAL_SLEEP
    assert p["checkpoint"] > 0 and p["optimizer"] > 0
    assert set(p) == {"epoch", "batches", "seconds", *PROFILE_STAGES}
    assert sum(p[s] for s in PROFILE_STAGES) == pytest.approx(p["seconds"], rel=1e-9)
    assert all(p[s] >= 0 for s in PROFILE_STAGES)
    assert p["seconds"] >= hist.last["seconds"] - 1e-3  # the profiled span is the epoch the history timed, and its checkpoint


def test_clean_training_has_no_attack_stage_and_profile_survives_the_round_trip(tmp_path):
    hist = _profiled(tmp_path, method="clean")
    assert "attack" not in hist.profile[0]
    again = History.from_dict(hist.to_dict())
    assert again.profile == hist.profile
    frame = again.profile_frame()
    assert list(frame.stage)[:3] == ["data", "attack", "forward/backward"] and frame.loc[frame.stage == "attack", "seconds"].item() == 0
    assert frame.share.sum() == pytest.approx(1.0)


def test_an_unprofiled_run_records_no_profile_and_says_so(tmp_path):
    train = DataLoader(SlowImages(8), batch_size=8)
    hist = finetune(SleepyNet(), train, None, method="clean", epochs=1, progress=False)
    assert hist.profile == [] and "profile" not in hist.to_dict()
    with pytest.raises(ValueError, match="no profile"): hist.profile_frame()
