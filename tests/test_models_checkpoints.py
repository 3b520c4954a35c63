"""Architectures build and run; checkpoints are atomic, safe, and rebuild pruned models in a fresh process."""
import copy
import pickle
import subprocess
import sys

import pytest
import torch
import torch_pruning as tp

from robust_prune.models import (ARCHITECTURES, create_model, load_checkpoint, save_checkpoint, unprunable_layers,
                                 read_checkpoint)


@pytest.mark.parametrize("arch,data,shape,classes", [
    ("digits_resnet", "digits", (1, 8, 8), 10), ("resnet18", "cifar10", (3, 32, 32), 10),
    ("resnet50", "cifar100", (3, 32, 32), 100), ("vgg16_bn", "tiny-imagenet", (3, 64, 64), 200),
    ("mobilevit_xs", "cifar10", (3, 32, 32), 10)])
def test_every_architecture_runs_on_its_data_shape(arch, data, shape, classes):
    model = create_model(arch, data, seed=0).eval()
    assert tuple(model.arch_config["input_shape"]) == shape
    with torch.no_grad():
        assert model(torch.rand(2, *shape)).shape == (2, classes)


@pytest.mark.parametrize("arch", ["digits_resnet", "resnet18", "mobilevit_xs"])
def test_normalisation_is_inside_the_model(arch):
    model = create_model(arch, "digits", seed=0).eval()
    x = torch.rand(3, 1, 8, 8)
    mean, std = model.normalize.mean, model.normalize.std
    assert torch.allclose(model.normalize(x), (x - mean) / std)
    # the body sees normalised pixels: the same network without its Normalize, fed pre-normalised images, agrees
    body = copy.deepcopy(model)
    body.normalize = torch.nn.Identity()
    with torch.no_grad():
        assert torch.allclose(model(x), body((x - mean) / std), atol=1e-5)
        assert not torch.allclose(model(x), body(x), atol=1e-3), "the model's output does not depend on its normalisation"


def test_pruned_resnet18_checkpoint_rebuilds_with_same_outputs(tmp_path):
    model = create_model("resnet18", "cifar10", seed=0).eval()
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, 3, 32, 32), tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=unprunable_layers(model))
    pruner.step()
    model.pruning_history = pruner.pruning_history()
    path = save_checkpoint(model, tmp_path / "r18.pt", note="half")
    loaded, meta = load_checkpoint(path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))
    assert meta.pop("provenance")["torch"] == str(torch.__version__) and meta == {"note": "half"}  # what was given, and what wrote it
    assert sum(p.numel() for p in loaded.parameters()) < 0.4 * 11.17e6


def test_pruned_checkpoint_loads_in_a_fresh_process(tmp_path):
    model = create_model("digits_resnet", seed=0).eval()
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, 1, 8, 8), tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.4, ignored_layers=unprunable_layers(model))
    pruner.step()
    model.pruning_history = pruner.pruning_history()
    save_checkpoint(model, tmp_path / "p.pt")
    x = torch.rand(2, 1, 8, 8)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expected = model(x)
    code = ("import torch, sys; from robust_prune.models import load_checkpoint; "
            f"m, _ = load_checkpoint(r'{tmp_path / 'p.pt'}'); x = torch.load(r'{tmp_path / 'x.pt'}', weights_only=True); "
            f"torch.save(m.eval()(x).detach(), r'{tmp_path / 'y.pt'}')")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), expected)


def test_checkpoint_holding_pickled_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "arch_config": {"arch": "digits_resnet"}, "x": Evil()}, path)
    with pytest.raises(ValueError, match="pickled Python objects"):
        load_checkpoint(path)
    assert not marker.exists()


def test_failed_save_keeps_previous_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    model = create_model(seed=0)
    path = save_checkpoint(model, tmp_path / "m.pt", version=1)
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, path, version=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    assert read_checkpoint(path)["meta"]["version"] == 1


def test_mismatched_weights_and_non_checkpoints_give_one_line_errors(tmp_path):
    model = create_model(seed=0)
    path = save_checkpoint(model, tmp_path / "m.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["arch_config"]["width"] = 8
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="do not fit") as err:
        load_checkpoint(tmp_path / "bad.pt")
    assert "\n" not in str(err.value)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a robust-prune checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "notes.pt").write_text("epoch 3: robust accuracy 0.41\n")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:500])  # torch.save's format, cut short
    for name, reason in [("empty", "the file is empty"), ("notes", r"it was not written by torch\.save \(a text file\? an image\?\)"),
                         ("cut", r"the file is damaged or incomplete \(a copy cut short\?\)")]:
        with pytest.raises(ValueError, match=rf"^'.*{name}\.pt' is not a readable robust-prune checkpoint: {reason}\.?$"):
            load_checkpoint(tmp_path / f"{name}.pt")


def test_registry_rejects_unknown_architecture():
    with pytest.raises(ValueError, match="choose one of"):
        create_model("alexnet")
    assert {"resnet18", "resnet50", "vgg16_bn", "mobilevit_xs", "digits_resnet"} <= set(ARCHITECTURES)


def test_finetune_checkpoints_a_network_it_did_not_build_and_resumes_it(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset
    from robust_prune.finetune import finetune
    torch.manual_seed(0)
    data = TensorDataset(torch.rand(32, 3, 8, 8), torch.arange(32) % 4)
    def net():  # the same initial weights each time
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4))
    kw = dict(method="pgd-at", attack="pgd:eps=0.1,steps=1", progress=False, checkpoint_dir=tmp_path, seed=0)
    whole = net()
    finetune(whole, DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator()), epochs=2, checkpoint_dir=tmp_path / "a",
             **{k: v for k, v in kw.items() if k != "checkpoint_dir"})
    from robust_prune.finetune import Callback
    class StopAfterOne(Callback):
        def on_epoch_end(self, run, row): run.stop = True
    first = net()
    finetune(first, DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator()), epochs=2, callbacks=[StopAfterOne()], **kw)
    assert (tmp_path / "last.pt").is_file()  # written for a network robust-prune did not build
    again = net()  # a fresh copy of the same network picks the run up after epoch 1
    hist = finetune(again, DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator()), epochs=2, resume=True, **kw)
    assert hist.resumed == [dict(epoch=2, batch=0)]
    for a, b in zip(again.state_dict().values(), whole.state_dict().values()): torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="did not build"): load_checkpoint(tmp_path / "last.pt")


def test_a_network_whose_modules_check_their_state_dict_version_saves_reloads_and_resumes(tmp_path):
    # torchvision's MNASNet refuses weights without the per-module versions that a dict of tensors loses
    from torch.utils.data import DataLoader, TensorDataset
    from robust_prune.finetune import Callback, finetune
    from robust_prune.models import read_checkpoint
    model = create_model("torchvision:mnasnet0_5", "cifar10", size=32, seed=0).eval()
    path = save_checkpoint(model, tmp_path / "m.pt")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad(): assert torch.equal(load_checkpoint(path)[0].eval()(x), model(x))
    ckpt = read_checkpoint(path)
    assert ckpt["state_dict_versions"] == {k: dict(v) for k, v in model.state_dict()._metadata.items()}  # MNASNet's own: version 2
    assert {"version": 2} in ckpt["state_dict_versions"].values()
    del ckpt["state_dict_versions"]  # a checkpoint written before the versions were kept: the rebuilt model's own are used
    torch.save(ckpt, tmp_path / "old.pt")
    with torch.no_grad(): assert torch.equal(load_checkpoint(tmp_path / "old.pt")[0].eval()(x), model(x))
    # a fine-tuning run of it stops after one epoch and resumes from its checkpoint
    data = DataLoader(TensorDataset(torch.rand(8, 3, 32, 32), torch.arange(8) % 10), batch_size=4)
    class StopAfterOne(Callback):
        def on_epoch_end(self, run, row): run.stop = True
    kw = dict(method="clean", epochs=2, progress=False, checkpoint_dir=tmp_path / "ft", seed=0)
    finetune(model, data, callbacks=[StopAfterOne()], **kw)
    assert finetune(model, data, resume=True, **kw).resumed == [dict(epoch=2, batch=0)]
