"""The CIFAR, SVHN and Tiny-ImageNet loaders read small files written in the real on-disk formats."""
import os
import pickle

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from robust_prune.data import DatasetNotFoundError, get_dataset, get_loaders


def _write_cifar(root, n_per_file=6, hundred=False):
    rng = np.random.default_rng(0)
    if hundred:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        files = {"train": 2 * n_per_file, "test": n_per_file}
        labels = {}
        for name, n in files.items():
            labels[name] = rng.integers(0, 100, n).tolist()
            entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": labels[name],
                     "coarse_labels": [l // 5 for l in labels[name]], "filenames": [f"img{i}.png" for i in range(n)]}
            (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"class{i}" for i in range(100)],
                                                    "coarse_label_names": [f"super{i}" for i in range(20)]}, protocol=2))
        return labels
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels[name] = rng.integers(0, 10, n_per_file).tolist()
        data = rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8)
        data[0, :1024] = 255  # first image: red channel saturated, the others as drawn
        entry = {"batch_label": name, "labels": labels[name], "data": data, "filenames": [f"{name}_{i}.png" for i in range(n_per_file)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"], "num_vis": 3072}, protocol=2))
    return labels


def test_cifar10_reads_real_format_batches_with_labels_and_channel_order(tmp_path):
    labels = _write_cifar(tmp_path)
    train = get_dataset("cifar10", train=True, root=tmp_path, augment=False)
    test = get_dataset("cifar10", train=False, root=tmp_path)
    assert len(train) == 30 and len(test) == 6
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.all(x[0] == 1.0)  # CHW order: the saturated plane is channel 0 (red)
    assert y == labels["data_batch_1"][0]
    assert [test[i][1] for i in range(6)] == labels["test_batch"]
    assert train.classes[0] == "airplane"


def test_cifar100_reads_fine_labels(tmp_path):
    labels = _write_cifar(tmp_path, hundred=True)
    ds = get_dataset("cifar100", train=True, root=tmp_path, augment=False)
    assert [ds[i][1] for i in range(len(ds))] == labels["train"]
    assert len(ds.classes) == 100


def test_cifar_loader_yields_augmented_batches_in_unit_range(tmp_path):
    _write_cifar(tmp_path)
    dls = get_loaders("cifar10", batch_size=8, root=tmp_path)
    x, y = next(iter(dls.train))
    assert x.shape == (8, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert dls.info.num_classes == 10


def test_cifar_batch_with_code_in_pickle_is_refused_without_running_it(tmp_path):
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        get_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


def test_missing_cifar_error_names_folder_and_download_flag(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        get_dataset("cifar10", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "download=True" in msg and "\n" not in msg


def test_svhn_reads_real_mat_file_and_maps_label_10_to_0(tmp_path):
    folder = tmp_path / "svhn"
    folder.mkdir()
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    y = np.array([[1], [10], [3], [10], [9]], dtype=np.uint8)
    scipy.io.savemat(folder / "test_32x32.mat", {"X": X, "y": y})
    ds = get_dataset("svhn", train=False, root=tmp_path)
    assert len(ds) == 5
    assert [ds[i][1] for i in range(5)] == [1, 0, 3, 0, 9]
    x, _ = ds[2]
    assert torch.allclose(x, torch.tensor(X[:, :, :, 2]).permute(2, 0, 1).float() / 255)


def test_missing_svhn_error_names_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="train_32x32.mat"):
        get_dataset("svhn", train=True, root=tmp_path)


def _write_tiny(root):
    base = root / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819", "n01641577"]
    (base).mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(2)
    for w in wnids:
        d = base / "train" / w / "images"
        d.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(d / f"{w}_{i}.JPEG")
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
    val = base / "val" / "images"
    val.mkdir(parents=True)
    lines = []
    for i, w in enumerate([wnids[2], wnids[0], wnids[1], wnids[2]]):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(val / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return wnids


def test_tiny_imagenet_reads_standard_layout_train_and_val(tmp_path):
    _write_tiny(tmp_path)
    train = get_dataset("tiny-imagenet", train=True, root=tmp_path, augment=False)
    val = get_dataset("tiny-imagenet", train=False, root=tmp_path)
    assert len(train) == 6 and sorted({train[i][1] for i in range(6)}) == [0, 1, 2]
    assert [val[i][1] for i in range(4)] == [2, 0, 1, 2]
    assert val[0][0].shape == (3, 64, 64)
    dls = get_loaders("tiny-imagenet", batch_size=3, root=tmp_path, size=32)
    assert next(iter(dls.train))[0].shape == (3, 3, 32, 32) and next(iter(dls.test))[0].shape == (3, 3, 32, 32)


def test_missing_tiny_imagenet_error_says_where(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="tiny-imagenet-200"):
        get_dataset("tiny-imagenet", root=tmp_path)


def test_digits_split_is_stratified_deterministic_and_resizable():
    a = get_dataset("digits", train=True, augment=False, size=32, channels=3)
    b = get_dataset("digits", train=True, augment=False, size=32, channels=3)
    assert torch.equal(a.data, b.data) and a.data.shape == (1347, 3, 32, 32)
    counts = torch.bincount(get_dataset("digits", train=False).targets)
    assert counts.min() >= 43 and counts.max() <= 46


def test_a_split_name_in_place_of_train_is_refused_not_read_as_the_training_split():
    # "test" is a true value: accepted, it gave the augmented training split (a benchmark used it for a "test" batch)
    with pytest.raises(ValueError, match="train must be True or False"):
        get_dataset("digits", "test")
    assert len(get_dataset("digits", np.bool_(False))) == len(get_dataset("digits", train=False)) == 450
