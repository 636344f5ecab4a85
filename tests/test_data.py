"""Datasets and loaders: formats, corrupt inputs, validation splits, batch-wise augmentation, process slicing."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from dhm.config import load_config
from dhm.data import build_dataset, build_loader, split_validation
from dhm.data.augment import AUGMENTS, apply_batch
from dhm.data.cifar import FORMATS
from dhm.errors import DataError


def _data_cfg(*overrides):
    return load_config(None, list(overrides)).data


def write_cifar_tarball(root, name="cifar10", per_batch=20, archive=None):
    """A small tarball in the official python-pickle layout (random images, known labels)."""
    fmt = FORMATS[name]
    rng = np.random.default_rng(0)
    classes = 10 if name == "cifar10" else 100
    members = {}
    for batch in (*fmt.train, fmt.test):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(i % classes) for i in range(per_batch)]
        members[batch] = pickle.dumps({b"data": data, fmt.label_key: labels, b"batch_label": batch.encode()})
    members[fmt.meta] = pickle.dumps({fmt.names_key: [f"class{i}" for i in range(classes)]})
    path = root / (archive or fmt.archive)
    with tarfile.open(path, "w:gz") as tar:
        for member, blob in members.items():
            info = tarfile.TarInfo(f"{fmt.folder}/{member}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_tarball_is_read(tmp_path, name):
    write_cifar_tarball(tmp_path, name)
    bundle = build_dataset(_data_cfg(f"data.name={name}", f"data.root={tmp_path}", "data.verify_md5=false"))
    n_train = 20 * len(FORMATS[name].train)
    assert bundle.train.images.shape == (n_train, 3, 32, 32) and bundle.train.images.dtype == torch.uint8
    assert bundle.test.labels.tolist() == [i % len(bundle.classes) for i in range(20)]
    assert bundle.classes[1] == "class1" and bundle.mean == FORMATS[name].mean


@pytest.mark.skipif(
    not (SHARED_DATA / "cifar10-jpeg" / "batches.meta").is_file(), reason="official batches.meta absent"
)
def test_cifar_official_meta_pickle(tmp_path):
    """The official python-2 meta pickle (bytes keys) gives the CIFAR-10 class names."""
    from dhm.data.cifar import _unpickle

    meta = _unpickle((SHARED_DATA / "cifar10-jpeg" / "batches.meta").read_bytes(), "batches.meta")
    assert meta[b"label_names"][0] == b"airplane"
    write_cifar_tarball(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    with tarfile.open(tmp_path / FORMATS["cifar10"].archive) as tar:
        tar.extractall(tmp_path, filter="data")
    (folder / "batches.meta").write_bytes((SHARED_DATA / "cifar10-jpeg" / "batches.meta").read_bytes())
    bundle = build_dataset(_data_cfg("data.name=cifar10", f"data.root={tmp_path}"))  # extracted folder: no md5
    assert bundle.classes[:2] == ["airplane", "automobile"]


def test_cifar_md5_mismatch_and_corruption(tmp_path):
    write_cifar_tarball(tmp_path)
    with pytest.raises(DataError, match="wrong md5"):
        build_dataset(_data_cfg("data.name=cifar10", f"data.root={tmp_path}"))
    path = tmp_path / FORMATS["cifar10"].archive
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match="corrupt CIFAR archive"):
        build_dataset(_data_cfg("data.name=cifar10", f"data.root={tmp_path}", "data.verify_md5=false"))


def test_cifar_missing_without_download(tmp_path):
    with pytest.raises(DataError, match="data.download=true"):
        build_dataset(_data_cfg("data.name=cifar100", f"data.root={tmp_path}"))


def test_digits_and_synthetic():
    digits = build_dataset(_data_cfg("data.name=digits"))
    assert digits.train.images.shape[1:] == (1, 32, 32) and len(digits.train) + len(digits.test) == 1797
    assert len(digits.test) == 359  # the fixed 20% test split
    a, b = (build_dataset(_data_cfg("data.name=synthetic", "data.options.train_size=64")) for _ in range(2))
    assert torch.equal(a.train.images, b.train.images) and a.train.images.shape == (64, 3, 32, 32)


def test_validation_split_is_seeded_and_disjoint():
    bundle = build_dataset(_data_cfg("data.name=synthetic", "data.options.train_size=100"))
    train, val = split_validation(bundle.train, 0.2, seed=3)
    train2, val2 = split_validation(bundle.train, 0.2, seed=3)
    assert len(val) == 20 and len(train) == 80 and torch.equal(val.images, val2.images)
    assert len(split_validation(bundle.train, 25, seed=3)[1]) == 25  # a count: at most a quarter of the split
    with pytest.raises(DataError, match=r"data.val_size=26 would hold out 26% of the 100 training images \(a count"):
        split_validation(bundle.train, 26, seed=3)
    assert split_validation(bundle.train, 0, seed=3)[1] is None
    rows = {tuple(x.flatten()[:64].tolist()) for x in torch.cat([train.images, val.images])}
    assert len(rows) == 100  # every image exactly once


def _write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_mnist_idx_reading_and_truncation(tmp_path):
    images = np.arange(5 * 28 * 28).reshape(5, 28, 28) % 256
    for split in ("train", "t10k"):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images, 2051)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(5), 2049)
    bundle = build_dataset(_data_cfg("data.name=mnist", f"data.root={tmp_path}"))
    assert bundle.train.images.shape == (5, 1, 28, 28) and bundle.test.labels.tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(bundle.train.images[2, 0], torch.from_numpy(images[2].astype(np.uint8)))
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match="corrupt MNIST file"):
        build_dataset(_data_cfg("data.name=mnist", f"data.root={tmp_path}"))


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="../shared/data/mnist is not present")
def test_real_mnist_files():
    bundle = build_dataset(_data_cfg("data.name=mnist", f"data.root={SHARED_DATA / 'mnist'}"))
    assert len(bundle.train) == 60_000 and len(bundle.test) == 10_000
    assert torch.bincount(bundle.train.labels).tolist()[:3] == [5923, 6742, 5958]


def _write_folder(root, classes=("cat", "dog"), per_class=3, size=8):
    from PIL import Image

    for split in ("train", "val"):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(np.full((size, size, 3), 40 * c + i, dtype=np.uint8)).save(
                    root / split / name / f"{i}.png"
                )


@pytest.mark.parametrize("in_memory", [False, True])
def test_imagefolder_streamed_and_in_memory(tmp_path, in_memory):
    _write_folder(tmp_path)
    cfg = _data_cfg("data.name=imagefolder", f"data.root={tmp_path}", f"data.in_memory={str(in_memory).lower()}")
    bundle = build_dataset(cfg)
    assert bundle.classes == ["cat", "dog"] and len(bundle.train) == 6
    loader = build_loader(
        bundle.test,
        train=False,
        batch_size=4,
        augment="none",
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        device=torch.device("cpu"),
        workers=0,
    )
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (6, 3, 8, 8) and y.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(x[4, :, 0, 0] * 255, torch.full((3,), 41.0))


def test_empty_imagefolder_fails(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match="no images found"):
        build_dataset(_data_cfg("data.name=imagefolder", f"data.root={tmp_path}"))


def test_batch_crop_and_flip_match_a_per_image_reference():
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    dy, dx = torch.tensor([0, 8, 4, 1, 7]), torch.tensor([8, 0, 4, 3, 2])
    flips = torch.tensor([True, False, True, False, True])
    out = apply_batch(images, AUGMENTS.get("cifar"), dy, dx, flips)
    for i in range(5):
        padded = torch.nn.functional.pad(images[i], (4, 4, 4, 4))
        crop = padded[:, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
        assert torch.equal(out[i], crop.flip(2) if flips[i] else crop)


def test_processes_and_accumulation_slice_the_same_global_batches():
    bundle = build_dataset(_data_cfg("data.name=synthetic", "data.options.train_size=96"))
    common = dict(
        train=True, batch_size=32, augment="cifar", mean=bundle.mean, std=bundle.std, device=torch.device("cpu"), seed=5
    )
    single = build_loader(bundle.train, **common)
    single.set_epoch(2)
    reference = list(single)
    assert len(reference) == 3
    parts = []
    for rank in range(2):
        loader = build_loader(bundle.train, rank=rank, world=2, accum=2, **common)
        loader.set_epoch(2)
        parts.append(list(loader))
    for step in range(3):
        micro = [parts[r][step * 2 + m] for m in range(2) for r in range(2)]  # slice m * world + rank
        assert torch.equal(torch.cat([x for x, _ in micro]), reference[step][0])
        assert torch.equal(torch.cat([y for _, y in micro]), reference[step][1])
    again = build_loader(bundle.train, **common)
    again.set_epoch(2)
    assert torch.equal(next(iter(again))[0], reference[0][0])  # an epoch replays exactly (resume)
    again.set_epoch(3)
    assert not torch.equal(next(iter(again))[0], reference[0][0])


def test_cifar_batches_never_run_code_from_data(tmp_path):
    """A crafted ``data_batch_1`` in an extracted folder (no md5 check) that would create a file if unpickled with
    plain pickle is refused with a one-line DataError; the official layouts (protocols 2 to 5) still load."""
    import os

    from dhm.config import load_config
    from dhm.data import build_dataset
    from dhm.data.cifar import FORMATS, _unpickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    fmt = FORMATS["cifar10"]
    folder = tmp_path / fmt.folder
    folder.mkdir()
    rng = np.random.default_rng(0)
    for batch in (*fmt.train, fmt.test):
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        (folder / batch).write_bytes(pickle.dumps({b"data": data, fmt.label_key: [0, 1, 2, 3]}))
    (folder / fmt.meta).write_bytes(pickle.dumps({fmt.names_key: [f"c{i}" for i in range(10)]}))
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), fmt.label_key: [0]}))
    cfg = load_config("smoke", ["data.name=cifar10", f"data.root={tmp_path}", "data.verify_md5=false"]).data
    with pytest.raises(DataError, match="corrupt CIFAR batch data_batch_1: UnpicklingError: refusing to load"):
        build_dataset(cfg)
    assert not marker.exists()
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for protocol in (2, 3, 4, 5):
        loaded = _unpickle(pickle.dumps({b"data": array, b"labels": [1, 2], b"name": b"x"}, protocol=protocol), "t")
        assert np.array_equal(loaded[b"data"], array) and loaded[b"labels"] == [1, 2] and loaded[b"name"] == b"x"
