"""Re-ID data and the retrieval task: the Market-1501 reader against the published counts (a tree of empty files
with Market's names), MSMT17 lists, identity folders on the real PKU subset, and a retrieval run through the
engine with identity batches, identity-carved validation and mAP choosing best.pt."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import SHARED_DATA

from dhm.config import load_config
from dhm.data import build_dataset
from dhm.engine import build_trainer
from dhm.errors import ConfigError, DataError

PKU = SHARED_DATA / "pku-reid-subset"


def _market_tree(root, train=(751, 12936), query=(750, 3368), gallery=(751, 15913), junk=3819):
    """Empty files named like Market-1501's: ``<pid>_c<cam>s1_<frame>_01.jpg``; gallery identity 0 is the
    distractors, identity -1 the junk."""
    rng = random.Random(0)

    def fill(folder, pids, count, first=1):
        folder.mkdir(parents=True)
        for k in range(count):
            pid = pids[k] if k < len(pids) else rng.choice(pids)
            (folder / f"{pid:04d}_c{rng.randint(1, 6)}s1_{k:06d}_01.jpg").touch()

    fill(root / "bounding_box_train", list(range(1, train[0] + 1)), train[1])
    fill(root / "query", list(range(1000, 1000 + query[0])), query[1])
    fill(root / "bounding_box_test", [0, *range(1000, 1000 + gallery[0] - 1)], gallery[1])
    for k in range(junk):
        (root / "bounding_box_test" / f"-1_c{rng.randint(1, 6)}s1_{900000 + k:06d}_01.jpg").touch()


def test_market_reader_gives_the_published_counts(tmp_path, capsys):
    root = tmp_path / "Market-1501-v15.09.15"
    _market_tree(root)
    cfg = load_config("smoke", ["data.name=market1501", f"data.root={tmp_path}"]).data
    bundle = build_dataset(cfg)
    assert len(bundle.classes) == 751 and len(bundle.train) == 12936
    assert sorted(set(bundle.train.labels.tolist())) == list(range(751))  # relabelled 0..N-1
    role = bundle.test.meta["role"]
    assert int((role == 0).sum()) == 3368 and int((role == 1).sum()) == 15913  # junk dropped
    gallery_ids = bundle.test.labels[role == 1]
    assert 0 in gallery_ids.tolist() and -1 not in gallery_ids.tolist()  # distractors kept
    assert set(bundle.test.meta["camera"].tolist()) <= set(range(6))
    out = capsys.readouterr().out
    assert "train 751 ids / 12936 images / 6 cameras" in out and "gallery 751 ids / 15913 images" in out


def test_msmt17_lists_and_bad_lines(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "list_train.txt").write_text("0000/0000_000_01_0303morning_0015_0.jpg 0\n0001/0001_003_07_x_1.jpg 1\n")
    (tmp_path / "list_val.txt").write_text("0002/0002_000_03_x_1.jpg 2\n")
    (tmp_path / "list_query.txt").write_text("0003/0003_000_02_x_1.jpg 3\n")
    (tmp_path / "list_gallery.txt").write_text("0003/0003_001_05_x_2.jpg 3\n")
    cfg = load_config("smoke", ["data.name=msmt17", f"data.root={tmp_path}", "data.options.with_val=true"]).data
    bundle = build_dataset(cfg)
    assert len(bundle.train) == 3 and bundle.train.meta["camera"].tolist() == [0, 6, 2]
    protocol = build_dataset(load_config("smoke", ["data.name=msmt17", f"data.root={tmp_path}"]).data)
    assert len(protocol.train) == 2  # list_val.txt only when asked, as torchreid (combineall)
    assert bundle.test.meta["camera"].tolist() == [1, 4] and bundle.test.meta["role"].tolist() == [0, 1]
    (tmp_path / "list_query.txt").write_text("only-a-path\n")
    with pytest.raises(DataError, match="list_query.txt:1"):
        build_dataset(cfg)
    for outside in ("../../0003/0003_000_02_x_1.jpg", "/etc/0003_000_02_x_1.jpg"):  # confined to the list's folder
        (tmp_path / "list_query.txt").write_text(f"{outside} 3\n")
        with pytest.raises(DataError, match=r"list_query.txt:1: .* leaves"):
            build_dataset(cfg)
    (tmp_path / "list_query.txt").write_text("0003/0003_000_02_x_1.jpg -3\n")
    with pytest.raises(DataError, match="counted from 0"):
        build_dataset(cfg)


@pytest.mark.skipif(not PKU.is_dir(), reason=f"{PKU} is not here")
def test_identity_folders_read_the_pku_subset_with_a_seeded_identity_split():
    overrides = ["data.name=reid_folders", f"data.root={PKU}", "data.options.folders=[train,val/all_imgs]"]
    one = build_dataset(load_config("smoke", overrides).data)
    assert len(one.train) + len(one.test) == 74 * 16 and len(one.classes) == 37
    assert not set(one.train.meta["identity"].tolist()) & set(one.test.meta["identity"].tolist())
    assert set(one.train.meta["camera"].tolist()) == {0, 1} and "role" not in one.test.meta
    other = build_dataset(load_config("smoke", [*overrides, "data.split_seed=1"]).data)
    assert set(other.test.meta["identity"].tolist()) != set(one.test.meta["identity"].tolist())


@pytest.mark.skipif(not PKU.is_dir(), reason=f"{PKU} is not here")
def test_retrieval_run_through_the_engine(tmp_path):
    overrides = [
        "data.name=reid_folders",
        f"data.root={PKU}",
        "data.options.folders=[train,val/all_imgs]",
        "data.in_memory=true",
        "data.val_size=6",
        "data.batch_size=32",
        "data.augment=flip",
        "train.task=retrieval",
        "model.name=cifar_resnet20",
        "model.widths=[8,16,32]",
        "train.epochs=2",
        "train.limit_batches=2",
        "data.options.test_ids=8",
        "train.progress=false",
        f"train.out_dir={tmp_path}",
    ]
    trainer = build_trainer(load_config("smoke", overrides))
    val_ids = torch.cat([b.y for b in trainer.parts.val])
    train_ids = torch.cat([b.y for b in trainer.parts.train])
    assert len(set(val_ids.tolist())) == 6 and not set(val_ids.tolist()) & set(train_ids.tolist())
    batch = next(iter(trainer.parts.train))
    assert (batch.y.view(-1, 4) == batch.y.view(-1, 4)[:, :1]).all()  # P x K identity batches
    summary = trainer.fit()
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    maps = [r["val/mAP/main"] for r in history]
    assert summary["select"] == "last epoch" and summary["best_epoch"] == 2  # the retrieval task keeps the last
    assert len(maps) == 2  # validation is still evaluated every epoch
    again = build_trainer(load_config("smoke", [*overrides, "train.select=mAP/main", f"train.out_dir={tmp_path}/v"]))
    chosen = again.fit()
    maps = [json.loads(line)["val/mAP/main"] for line in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()]
    assert chosen["select"] == "val/mAP/main" and chosen["best_epoch"] == 1 + max(range(2), key=lambda e: (maps[e], e))
    assert 0 < summary["test_mAP"] <= 100 and {"mAP/concat", "rank5/head1", "mINP/main"} <= set(summary["test"])


def test_batch_hard_triplet_and_embedding_mimicking_terms():
    from dhm.losses import BatchHardTriplet, PairDistance

    feats = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 2.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    out: dict = {}
    loss = BatchHardTriplet("main", margin=0.3)([None], ["main"], y, out, {"features": [feats]})
    # anchor 0: d_ap 3, d_an 1 -> 2.3; anchor 1: d_ap 3, d_an sqrt(10) -> relu(3 - 3.162 + 0.3) = 0.138;
    # anchor 2: d_ap 1, d_an 1 -> 0.3; anchor 3: d_ap 1, d_an 2 -> 0
    expected = (2.3 + (3 - 10**0.5 + 0.3) + 0.3 + 0.0) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-5) and set(out) == {"triplet/main"}
    soft = BatchHardTriplet("main", margin=0)([None], ["main"], y, {}, {"features": [feats]})
    gaps = torch.tensor([2.0, 3 - 10**0.5, 0.0, -1.0])
    assert float(soft) == pytest.approx(float(torch.nn.functional.softplus(gaps).mean()), rel=1e-5)
    teacher = torch.randn(4, 2, requires_grad=True)
    student = torch.randn(4, 2, requires_grad=True)
    out = {}
    value = PairDistance({"main->head1": 1.0})(
        [None, None], ["main", "head1"], y, out, {"features": [teacher, student]}
    )
    grads = torch.autograd.grad(value, [teacher, student], allow_unused=True)
    assert grads[0] is None and float(grads[1].abs().sum()) > 0 and float(out["emb"]) > 0


def test_the_retrieval_task_supervises_as_bot_and_ce_trains_the_plain_backbone_with_features():
    import dhm
    from dhm.engine.build import term_specs

    cfg = load_config("pku-reid", ["loss.mode=dhm-emb"])
    assert cfg.loss.label_smoothing == 0.1  # the recipe's (BoT's)
    assert [s.term for s in term_specs(cfg)] == ["ce", "triplet", "pair_kl", "pair_dist"]
    centered = load_config("pku-reid", ["loss.mode=dhm", "loss.supervision.center_weight=5e-4"])
    assert [s.term for s in term_specs(centered)] == ["ce", "triplet", "center", "pair_kl"]
    with pytest.raises(ConfigError, match="loss.mode=bot-dhm is now loss.mode=dhm"):
        load_config("pku-reid", ["loss.mode=bot-dhm"])
    with pytest.raises(ConfigError, match="train.task=classification has no option loss.supervision.margin"):
        load_config("smoke", ["loss.supervision.margin=0.2"])
    assert "bot" not in dhm.METHODS
    assert load_config("pku-reid", ["loss.mode=ce"]).model.branches == "none"  # BoT alone: the plain backbone


def test_a_missing_cuhk03np_variant_is_refused_never_read_as_the_other(tmp_path):
    from PIL import Image

    labeled = tmp_path / "cuhk03-np" / "labeled"
    for folder, names in (
        ("bounding_box_train", ["0001_c1s1_000001_00.jpg", "0001_c2s1_000002_00.jpg", "0002_c1s1_000003_00.jpg"]),
        ("query", ["0003_c1s1_000004_00.jpg"]),
        ("bounding_box_test", ["0003_c2s1_000005_00.jpg", "0004_c1s1_000006_00.jpg"]),
    ):
        (labeled / folder).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (16, 32), (120, 60, 30)).save(labeled / folder / name)
    base = ["data.name=cuhk03np", f"data.root={tmp_path}", "loss.mode=ce", "train.task=retrieval"]
    with pytest.raises(DataError, match="no detected/ folder under"):
        build_dataset(load_config("smoke", [*base, "data.options.variant=detected"]).data)
    with pytest.raises(DataError, match="no detected/ folder under"):  # pointed at the labeled folder itself
        build_dataset(load_config("smoke", [*base[:1], f"data.root={labeled}", *base[2:]]).data)
    bundle = build_dataset(load_config("smoke", [*base, "data.options.variant=labeled"]).data)
    assert len(bundle.train.labels) == 3
