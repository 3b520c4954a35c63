"""Fine-tune on synthetic data under torchrun, as a user script would: `finetune` and `evaluate` unchanged.

    python -m torch.distributed.run --nproc_per_node 2 benchmarks/ddp_epoch.py --device cpu --json out.json

Every process builds the same data and model; `finetune` joins the process group, splits the data and wraps the
model in DDP. Rank 0 writes `--json`: the history, the evaluation, the time and a digest of the final weights.
`--arch plain_cnn` is a small network without batch norm, whose data-parallel result equals the one-process result
up to float rounding (batch-norm statistics are per process, so with batch norm the two differ more).
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from robust_prune.evaluation import evaluate
from robust_prune.core import dist_info, init_distributed
from robust_prune.finetune import finetune
from robust_prune.models import create_model


def plain_cnn(channels: int = 3, size: int = 32, num_classes: int = 10) -> nn.Module:
    "A conv net without batch norm (for the exact one- vs several-process comparison)."
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                      nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, num_classes))
    m.arch_config = dict(arch="plain_cnn", input_shape=[channels, size, size], num_classes=num_classes)
    return m


def synthetic(n: int, shape: tuple[int, ...], classes: int, seed: int) -> TensorDataset:
    "Images in [0, 1] whose label is visible in them (a bright patch per class), so accuracy can rise."
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = 0.3 * torch.rand(n, *shape, generator=g)
    c, h, w = shape
    for k in range(classes):
        r, q = divmod(k, 4)
        x[y == k, :, (r * h) // 4:(r * h) // 4 + h // 4, (q * w) // 4:(q * w) // 4 + w // 4] += 0.6
    return TensorDataset(x.clamp(0, 1), y)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet18", help="resnet18 (CIFAR-style), digits_resnet, or plain_cnn (no batch norm)")
    p.add_argument("--train-images", type=int, default=2048, help="training images")
    p.add_argument("--test-images", type=int, default=256, help="test images")
    p.add_argument("--size", type=int, default=32, help="image side")
    p.add_argument("--batch", type=int, default=128, help="batch size per process")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--method", default="trades")
    p.add_argument("--attack", default="pgd:eps=8/255,steps=10")
    p.add_argument("--eval-attack", default="pgd:eps=8/255,steps=5")
    p.add_argument("--eval-samples", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", default="auto")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=0, help="loader worker processes")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-after", type=int, default=None, help="end the run after this many epochs (to test resuming)")
    p.add_argument("--checkpoint-steps", type=int, default=None, help="also checkpoint every this many batches inside an epoch")
    p.add_argument("--kill-rank", type=int, default=None, help="this rank kills itself with SIGKILL (to test a lost process) ...")
    p.add_argument("--kill-at-step", type=int, default=1, help="... after this many training steps")
    p.add_argument("--profile", action="store_true", help="time the epoch's stages (History.profile; the device is synchronised at each boundary)")
    p.add_argument("--sync-bn", action="store_true", help="batch-norm statistics over every process's batch (SyncBatchNorm; GPUs only)")
    p.add_argument("--json", default=None, help="rank 0 writes the result here")
    p.add_argument("--every-rank", action="store_true", help="every rank also writes its weights and buffers to JSON.rankN")
    a = p.parse_args(argv)
    torch.set_num_threads(1 if a.device == "cpu" else torch.get_num_threads())
    init_distributed()
    rank, world = dist_info()
    shape = (3, a.size, a.size)
    model = plain_cnn(3, a.size) if a.arch == "plain_cnn" else create_model(a.arch, "cifar10", seed=0, size=a.size)
    dev = torch.device(a.device)
    model.to(dev)
    pin = dev.type == "cuda"
    train = DataLoader(synthetic(a.train_images, shape, 10, 0), batch_size=a.batch, shuffle=True, drop_last=False, pin_memory=pin,
                       num_workers=a.workers, persistent_workers=a.workers > 0, generator=torch.Generator().manual_seed(0))
    test = DataLoader(synthetic(a.test_images, shape, 10, 1), batch_size=a.batch, pin_memory=pin)
    callbacks = []
    if a.stop_after is not None:
        from robust_prune.finetune import Callback
        class StopAfter(Callback):
            def on_epoch_end(self, run, row): run.stop = run.stop or run.epoch >= a.stop_after
        callbacks.append(StopAfter())
    if a.kill_rank == rank:
        import os, signal
        from robust_prune.finetune import Callback
        class Kill(Callback):
            def on_batch_end(self, run, loss):
                if run.step >= a.kill_at_step: os.kill(os.getpid(), signal.SIGKILL)
        callbacks.append(Kill())
    t0 = time.time()
    hist = finetune(model, train, test, method=a.method, attack=a.attack, eval_attack=a.eval_attack, epochs=a.epochs,
                    lr=a.lr, eval_samples=a.eval_samples, seed=0, progress=False, amp=a.amp, callbacks=callbacks,
                    checkpoint_dir=a.checkpoint_dir, resume=a.resume, checkpoint_steps=a.checkpoint_steps,
                    profile=a.profile, sync_bn=a.sync_bn)
    if dev.type == "cuda": torch.cuda.synchronize()
    seconds = time.time() - t0
    report = evaluate(model, test, [a.eval_attack], name=f"{world} process(es)", latency=False, progress=False)
    flat = torch.cat([v.detach().double().flatten().cpu() for v in model.state_dict().values()])
    out = dict(world=world, history=hist.to_dict(), report=report.to_dict(), seconds=seconds,
               images_per_second=a.train_images * len(hist.epochs) / seconds if seconds > 0 else None,
               weights=flat.tolist() if flat.numel() <= 20000 else None, weight_norm=float(flat.norm()),
               device=str(next(model.parameters()).device),
               norm_layers=sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}))
    if a.every_rank and a.json:
        with open(f"{a.json}.rank{rank}", "w") as f: json.dump(flat.tolist(), f)
    if rank == 0:
        if a.json:
            with open(a.json, "w") as f: json.dump(out, f)
        print(json.dumps({k: v for k, v in out.items() if k != "weights"}))
    return out


if __name__ == "__main__":
    main()
