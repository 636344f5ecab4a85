"""Person re-identification datasets: Market-1501, DukeMTMC-reID, CUHK03-NP, MSMT17 and identity folders.

Every reader returns a :class:`Bundle` whose ``train`` labels are the training identities relabelled 0..N-1
(``meta["identity"]`` keeps the original id, ``meta["camera"]`` the 0-based camera) and whose ``test`` split holds
the query images then the gallery images, labelled with their original identity and marked by
``meta["role"]`` (0 = query, 1 = gallery). A split without ``role`` (validation, an identity folder's test split)
is evaluated all against all: every image a query against every other. Junk images (identity -1) are dropped;
distractors (identity 0) stay in the gallery.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config.schema import DataConfig
from ..errors import ConfigError, DataError
from .folder import EXTENSIONS, IMAGENET_MEAN, IMAGENET_STD, decode_all
from .registry import register_dataset
from .sources import Bundle, FileSource

MARKET_NAME = re.compile(r"([-\d]+)_c(\d+)")
QUERY, GALLERY = 0, 1


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"re-ID folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)


def _parse(files: list[Path], pattern: re.Pattern = MARKET_NAME) -> Items:
    """(file, identity, 0-based camera) of Market-style names; junk (identity -1) dropped."""
    out = []
    for path in files:
        found = pattern.search(path.name)
        if found is None:
            raise DataError(f"{path}: the name does not give an identity and a camera (like 0002_c1s1_000451_03.jpg)")
        pid, cam = _number(found.group(1), path, "identity"), _number(found.group(2), path, "camera")
        if pid < -1 or cam < 1:
            raise DataError(f"{path}: identity {pid} / camera {cam}: identities are >= 0 (-1 junk), cameras >= 1")
        if pid != -1:
            out.append((path, pid, cam - 1))
    return out


def _number(text: str | None, path: Path, what: str) -> int:
    """The integer a file name gives for ``what``, as a DataError naming the file when it is none or out of range."""
    try:
        value = int(text if text is not None else "")
    except ValueError:
        raise DataError(f"{path}: {text!r} is not a number ({what} in the name)") from None
    if abs(value) >= 2**31:
        raise DataError(f"{path}: {what} {value} is out of range (|id| < 2^31)")
    return value


def _source(items: Items, labels: list[int] | None = None, role: int | None = None) -> FileSource:
    meta = {
        "identity": torch.tensor([pid for _, pid, _ in items], dtype=torch.int64),
        "camera": torch.tensor([cam for _, _, cam in items], dtype=torch.int64),
    }
    if role is not None:
        meta["role"] = torch.full((len(items),), role, dtype=torch.int64)
    targets = labels if labels is not None else [pid for _, pid, _ in items]
    return FileSource([p for p, _, _ in items], torch.tensor(targets, dtype=torch.int64), meta)


Items = list[tuple[Path, int, int]]  # (file, identity, 0-based camera)


def reid_bundle(
    name: str,
    cfg: DataConfig,
    train: Items,
    query: Items | None,
    gallery: Items | None,
    everyone: Items | None = None,
    names: list[str] | None = None,
    separate_ids: bool = False,
) -> Bundle:
    """The bundle of a re-ID dataset (see the module docstring), its counts printed once: a test split of
    ``query`` then ``gallery`` images, or ``everyone`` evaluated all against all; decoded into memory with
    ``data.in_memory``."""
    if not train:
        raise DataError(f"{name}: no training images found")
    ids = sorted({pid for _, pid, _ in train})
    relabel = {pid: k for k, pid in enumerate(ids)}
    train_src = _source(train, [relabel[pid] for _, pid, _ in train])
    test = _source(everyone) if everyone else None
    if query is not None and gallery is not None:
        test = _source(query + gallery)
        test.meta["role"] = torch.tensor([QUERY] * len(query) + [GALLERY] * len(gallery), dtype=torch.int64)
    if os.environ.get("RANK", "0") == "0":
        splits = {"train": train, "query": query or [], "gallery": gallery or [], "test (all vs all)": everyone or []}
        print(describe(name, splits), flush=True)
    classes = [names[i] if names else str(i) for i in ids]
    if cfg.in_memory:
        train_mem = decode_all(train_src, cfg.image_size, cfg.workers)
        test_mem = decode_all(test, cfg.image_size, cfg.workers) if test is not None else None
        return Bundle(train_mem, test_mem, classes, 3, IMAGENET_MEAN, IMAGENET_STD, separate_ids=separate_ids)
    return Bundle(train_src, test, classes, 3, IMAGENET_MEAN, IMAGENET_STD, separate_ids=separate_ids)


def describe(name: str, splits: dict[str, Items]) -> str:
    """``name: train 751 ids / 12936 images / 6 cameras; ...`` for the splits that have images."""
    parts = []
    for split, items in splits.items():
        if items:
            ids = len({pid for _, pid, _ in items})
            cams = len(Counter(cam for _, _, cam in items))
            parts.append(f"{split} {ids} ids / {len(items)} images / {cams} cameras")
    return f"{name}: " + "; ".join(parts)


def _under(root: Path, *candidates: str) -> Path:
    """``root`` itself or the first of its sub-folders named ``candidates`` that exists."""
    for sub in candidates:
        if (root / sub).is_dir():
            return root / sub
    return root


def market_layout(name: str, root: Path, cfg: DataConfig) -> Bundle:
    """``bounding_box_train``, ``query``, ``bounding_box_test`` with Market-style file names."""
    train = _parse(_images(root / "bounding_box_train"))
    query = _parse(_images(root / "query"))
    gallery = _parse(_images(root / "bounding_box_test"))
    return reid_bundle(name, cfg, train, query, gallery)


@register_dataset("market1501", keys=("root", "workers", "in_memory"))
def market1501(cfg: DataConfig) -> Bundle:
    """Market-1501 (751 training identities, 6 cameras) under ``data.root`` or ``Market-1501-v15.09.15/``."""
    root = _under(Path(cfg.root).expanduser(), "Market-1501-v15.09.15", "market1501", "Market-1501")
    return market_layout("market1501", root, cfg)


@register_dataset("dukemtmc", keys=("root", "workers", "in_memory"))
def dukemtmc(cfg: DataConfig) -> Bundle:
    """DukeMTMC-reID (702 training identities, 8 cameras), the Market layout, under ``DukeMTMC-reID/``."""
    return market_layout("dukemtmc", _under(Path(cfg.root).expanduser(), "DukeMTMC-reID"), cfg)


@dataclass
class CUHK03Options:
    """``data.options.*`` of ``cuhk03np``."""

    variant: str = "detected"  # detected | labeled

    def __post_init__(self) -> None:
        if self.variant not in ("detected", "labeled"):
            raise ConfigError(f"data.options.variant of cuhk03np is detected or labeled, got {self.variant!r}")


@register_dataset("cuhk03np", keys=("root", "workers", "in_memory"), options=CUHK03Options)
def cuhk03np(cfg: DataConfig) -> Bundle:
    """CUHK03-NP (767 / 700 identities), ``detected`` or ``labeled`` (``data.options.variant``), the Market
    layout."""
    variant = cfg.options.variant
    root = _under(Path(cfg.root).expanduser(), "cuhk03-np", "CUHK03-NP")
    if (root / variant).is_dir():
        root = root / variant
    elif root.name != variant:  # never the other variant's images under this variant's name
        raise DataError(f"cuhk03np: no {variant}/ folder under {root} (data.options.variant={variant})")
    return market_layout(f"cuhk03np-{variant}", root, cfg)


def _msmt_list(root: Path, images: Path, name: str) -> Items:
    path = root / name
    if not path.is_file():
        raise DataError(f"msmt17: {path} does not exist")
    items = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            rel, pid = fields[0], int(fields[1])
            cam = int(Path(rel).name.split("_")[2]) - 1
        except (IndexError, ValueError):
            raise DataError(f"{path}:{number}: expected '<path> <identity>' with a camera in the name") from None
        if pid < 0 or cam < 0:
            raise DataError(f"{path}:{number}: identity and camera are counted from 0 and 1, got {line.strip()!r}")
        image = images / rel
        if Path(rel).is_absolute() or not image.resolve().is_relative_to(images.resolve()):
            raise DataError(f"{path}:{number}: {rel} leaves {images} (a list names images under its folder)")
        items.append((image, pid, cam))
    return items


@dataclass
class MSMT17Options:
    """``data.options.*`` of ``msmt17``."""

    with_val: bool = False  # add list_val.txt to training (torchreid: only with combineall; the protocol: not)


@register_dataset("msmt17", keys=("root", "workers", "in_memory"), options=MSMT17Options)
def msmt17(cfg: DataConfig) -> Bundle:
    """MSMT17 (1,041 training identities, 15 cameras): ``list_train.txt`` (+ ``list_val.txt`` only with
    ``data.options.with_val=true``, as torchreid only with ``combineall``), ``list_query.txt``,
    ``list_gallery.txt``, images under ``train/`` and ``test/`` (V1) or ``mask_train_v2/`` and ``mask_test_v2/``
    (V2)."""
    root = _under(Path(cfg.root).expanduser(), "MSMT17_V2", "MSMT17_V1", "MSMT17")
    train_dir, test_dir = ("mask_train_v2", "mask_test_v2") if (root / "mask_train_v2").is_dir() else ("train", "test")
    train = _msmt_list(root, root / train_dir, "list_train.txt")
    if cfg.options.with_val:
        train += _msmt_list(root, root / train_dir, "list_val.txt")
    query = _msmt_list(root, root / test_dir, "list_query.txt")
    gallery = _msmt_list(root, root / test_dir, "list_gallery.txt")
    return reid_bundle("msmt17", cfg, train, query, gallery, separate_ids=True)  # its lists number test ids apart


@dataclass
class FolderOptions:
    """``data.options.*`` of ``reid_folders``."""

    folders: list[str] = field(default_factory=list)  # sub-folders holding identity folders (default: the root)
    camera_pattern: str = r"^(\d+)_"  # regex whose first group is the camera in a file name
    test_ids: float = 0.5  # test identities, a fraction (< 1) or a count, split by data.split_seed


@register_dataset("reid_folders", keys=("root", "workers", "in_memory"), options=FolderOptions)
def reid_folders(cfg: DataConfig) -> Bundle:
    """Identity folders: ``<root>/<folder>/<identity>/<image>`` for each of ``data.options.folders`` (default: the
    root itself); the camera is the first group of ``data.options.camera_pattern`` in the file name. Identities
    are split seeded (``data.split_seed``) into training and test ones (``data.options.test_ids``: a fraction or a
    count); the test split is evaluated all against all."""
    root, options = Path(cfg.root).expanduser(), cfg.options
    try:
        pattern = re.compile(options.camera_pattern)
    except re.error as exc:
        raise DataError(
            f"data.options.camera_pattern {options.camera_pattern!r} is not a regular expression: {exc}"
        ) from None
    if pattern.groups < 1:
        raise DataError(
            f"data.options.camera_pattern {options.camera_pattern!r} has no group: its first (...) group is the camera"
        )
    items = []
    for folder in [root / f for f in options.folders] or [root]:
        if not folder.is_dir():
            raise DataError(f"re-ID folder {folder} does not exist")
        for identity in sorted(d for d in folder.iterdir() if d.is_dir()):
            for path in _images(identity):
                found = pattern.search(path.name)
                if found is None:
                    raise DataError(
                        f"{path}: data.options.camera_pattern {options.camera_pattern!r} finds no camera in the name"
                    )
                items.append((path, identity.name, _number(found.group(1), path, "camera")))
    names = sorted({pid for _, pid, _ in items})
    if len(names) < 2:
        raise DataError(f"reid_folders: {root} has {len(names)} identity folders; at least 2 are needed")
    index = {n: k for k, n in enumerate(names)}
    cams = sorted({cam for _, _, cam in items})
    numbered = [(p, index[pid], cams.index(cam)) for p, pid, cam in items]
    count = round(options.test_ids * len(names)) if options.test_ids < 1 else int(options.test_ids)
    if not 0 < count < len(names):
        raise DataError(
            f"data.options.test_ids={options.test_ids} leaves no training or no test identities ({len(names)} in all)"
        )
    perm = torch.randperm(len(names), generator=torch.Generator().manual_seed(cfg.split_seed + 7919)).tolist()
    test_ids = set(perm[:count])
    train = [it for it in numbered if it[1] not in test_ids]
    test = [it for it in numbered if it[1] in test_ids]
    return reid_bundle("reid_folders", cfg, train, None, None, test, names)
