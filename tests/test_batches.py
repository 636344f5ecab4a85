"""Batches, samplers, carvings and model outputs as seams: per-sample metadata reaches the loss, group samplers
keep their groups whole on one process with the same global batches for any process count, validation can be
carved by identity, and a term that reads pooled features gets them."""

from __future__ import annotations

import json

import pytest
import torch

import dhm
from dhm.config import load_config
from dhm.data import Batch, BatchPlan, FileSource, TensorSource, build_loader, build_sampler
from dhm.deployed import load_deployed
from dhm.engine import build_trainer
from dhm.errors import ConfigError, DataError
from dhm.losses import TERMS, Term


def _source(n: int = 60, classes: int = 6) -> TensorSource:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    return TensorSource(images, labels, {"camera": torch.arange(n) % 2 + 1})


def _loader(source, **kwargs):
    args = {"train": True, "batch_size": 12, "augment": "none", "device": torch.device("cpu")}
    args.update(mean=(0.5,) * 3, std=(0.25,) * 3)
    return build_loader(source, **{**args, **kwargs})


def test_a_batch_is_a_pair_with_the_samples_index_and_the_splits_metadata():
    source = _source()
    batch = next(iter(_loader(source, train=False)))
    x, y = batch  # users' code unpacks two
    assert isinstance(batch, Batch) and len(batch) == 2 and batch.x is x and batch.y is y
    index = batch.meta["index"]
    assert torch.equal(y, source.labels[index]) and torch.equal(batch.meta["camera"], source.meta["camera"][index])
    for train_batch in _loader(source):
        assert torch.equal(train_batch.y, source.labels[train_batch.meta["index"]])
    part = source.subset(torch.tensor([5, 7, 9]))
    assert part.meta["camera"].tolist() == [2, 2, 2] and part.labels.tolist() == [5, 1, 3]


def test_file_batches_carry_the_same_metadata(tmp_path):
    from PIL import Image

    files = []
    for i in range(8):
        files.append(tmp_path / f"{i}.png")
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(files[-1])
    source = FileSource(files, torch.arange(8) % 4, {"camera": torch.arange(8) + 10})
    batches = list(_loader(source, batch_size=4, workers=0))
    seen = torch.cat([b.meta["index"] for b in batches])
    assert sorted(seen.tolist()) == list(range(8))
    for b in batches:
        assert torch.equal(b.meta["camera"], b.meta["index"] + 10) and torch.equal(b.y, b.meta["index"] % 4)


def _global_batches(sampler, size, batch, world, accum, epoch=0):
    """The global batches that ``world`` processes with ``accum`` micro-steps see, rebuilt from every rank."""
    steps: dict[int, list] = {}
    for rank in range(world):
        plan = BatchPlan(size, batch, True, seed=3, rank=rank, world=world, accum=accum, sampler=sampler)
        for index, step, sl in plan.batches(epoch):
            steps.setdefault(step, []).append((sl.start, index))
    return [torch.cat([index for _, index in sorted(parts, key=lambda p: p[0])]) for _, parts in sorted(steps.items())]


def test_identity_batches_hold_p_distinct_identities_of_k_images_whatever_the_process_count():
    labels = torch.repeat_interleave(torch.arange(10), torch.tensor([4, 5, 6, 7, 8, 3, 9, 4, 2, 12]))
    sampler = build_sampler("identity", labels, instances=2)
    one = _global_batches(sampler, len(labels), 8, world=1, accum=1)
    assert len(one) == sampler.steps(8) == (2 + 2 + 3 + 3 + 4 + 1 + 4 + 2 + 1 + 6) // 4
    for batch in one:
        groups = labels[batch].view(4, 2)
        assert (groups[:, 0] == groups[:, 1]).all() and len(set(groups[:, 0].tolist())) == 4
    for world, accum in ((2, 1), (2, 2), (4, 1)):  # the same global batches, each group on one process
        assert all(torch.equal(a, b) for a, b in zip(one, _global_batches(sampler, len(labels), 8, world, accum)))
    assert not torch.equal(torch.cat(one), torch.cat(_global_batches(sampler, len(labels), 8, 1, 1, epoch=1)))
    with pytest.raises(DataError, match="whole groups of 2"):
        BatchPlan(len(labels), 8, True, world=8, sampler=sampler)
    with pytest.raises(DataError, match="multiple of data.sampler_options.instances=2"):
        sampler.steps(9)
    with pytest.raises(DataError, match="identities per batch; the training split has 10"):
        sampler.steps(22)


def test_identity_carving_holds_out_whole_identities():
    source = _source(60, 6)
    train, val = dhm.data.carve_validation("identity", source, 1 / 3, seed=1)
    assert len(set(val.labels.tolist())) == 2 and not set(val.labels.tolist()) & set(train.labels.tolist())
    assert len(train) + len(val) == 60 and set(val.meta) == {"camera"}
    with pytest.raises(DataError, match="no training identities"):
        dhm.data.carve_validation("identity", source, 0.99, seed=1)
    with pytest.raises(DataError, match=r"data.val_size=2 would hold out 33% of the 6 training identities \(a count"):
        dhm.data.carve_validation("identity", source, 2, seed=1)


class IndexMemory(Term):
    """A toy term that reads the batch's ``index`` (as PS-KD's per-sample memory does) and the heads' pooled
    features (as feature hints do): it logs how many distinct samples it saw and a feature norm."""

    needs = ("features",)

    def __init__(self, size: int = 1 << 16) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(size))

    def forward(self, heads, names, target, out, extra=None):
        self.seen[extra["meta"]["index"]] = 1.0
        out["seen"] = self.seen.sum()
        features = extra["features"]
        assert features._fields == tuple(names) and features[0].shape[0] == target.shape[0]
        out["feat"] = features[0].pow(2).mean()
        return 1e-3 * out["feat"]


class SameClassPairs(dhm.data.Sampler):
    """The docs' worked sampler: every sample followed by a random sample of its own class (groups of 2)."""

    group = 2

    def __init__(self, labels, **_):
        self.labels = labels.cpu()

    def steps(self, batch_size):
        return 2 * len(self.labels) // batch_size

    def draw(self, steps, batch_size, generator, seed):
        g = torch.Generator().manual_seed(seed)
        anchors = torch.randperm(len(self.labels), generator=g)[: steps * batch_size // 2]
        partners = []
        for a in anchors.tolist():
            same = torch.nonzero(self.labels == self.labels[a]).flatten()
            partners.append(same[torch.randint(len(same), (1,), generator=g)])
        return torch.stack([anchors, torch.cat(partners)], 1).flatten().to(generator.device)


def _register():
    if "toy-index-memory" not in TERMS:
        TERMS.register("toy-index-memory")(IndexMemory)
    if "toy-memory" not in dhm.METHODS:
        dhm.METHODS.register("toy-memory")(
            dhm.Method(lambda loss: [dhm.TermSpec("ce", {"heads": "all"}), dhm.TermSpec("toy-index-memory", {})])
        )
    if "toy-pairs" not in dhm.data.SAMPLERS:
        dhm.data.SAMPLERS.register("toy-pairs")(SameClassPairs)


def test_a_sampler_and_a_term_reading_metadata_and_features_train_through_the_engine(tmp_path):
    _register()
    overrides = [
        "data.options.train_size=128",
        "data.options.test_size=64",
        "data.val_size=32",
        "data.batch_size=32",
        "data.sampler=toy-pairs",
        "train.epochs=1",
        "train.progress=false",
        "loss.mode=toy-memory",
        f"train.out_dir={tmp_path}",
    ]
    trainer = build_trainer(load_config("smoke", overrides))
    out = trainer.model.train()(torch.randn(2, 3, 32, 32))
    assert isinstance(out, dhm.HeadOutputs) and out.features.main.ndim == 2 and len(out.features) == len(out.logits)
    summary = trainer.fit()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert trainer.parts.train.steps == 2 * 96 // 32 and record["train/seen"] > 32  # every step's indices
    assert summary["test_acc1"] >= 0 and not isinstance(trainer.model.eval()(torch.randn(2, 3, 32, 32)), tuple)
    pairs = next(iter(trainer.parts.train))
    assert torch.equal(pairs.y[0::2], pairs.y[1::2])  # the sampler's groups reach the step whole


def test_a_term_needing_features_refuses_a_model_without_them():
    _register()
    loss = dhm.losses.Objective([IndexMemory()])
    with pytest.raises(ValueError, match="features=True"):
        loss((torch.randn(2, 3), torch.randn(2, 3)), torch.tensor([0, 1]), {"index": torch.tensor([0, 1])})


def test_identity_sampler_and_carving_from_the_config(tmp_path):
    overrides = [
        "data.options.train_size=256",
        "data.options.test_size=64",
        "data.val_size=2",
        "data.val_by=identity",
        "data.sampler=identity",
        "data.sampler_options.instances=4",
        "data.batch_size=32",
        "train.epochs=1",
        "train.progress=false",
        f"train.out_dir={tmp_path}",
    ]
    trainer = build_trainer(load_config("smoke", overrides))
    val_labels = torch.cat([b.y for b in trainer.parts.val])
    assert len(set(val_labels.tolist())) == 2
    batch = next(iter(trainer.parts.train))
    groups = batch.y.view(-1, 4)
    assert (groups == groups[:, :1]).all() and len(set(groups[:, 0].tolist())) == 8
    for key, value in (("data.sampler", "bogus"), ("data.val_by", "bogus")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            build_trainer(load_config("smoke", [*overrides, f"{key}={value}"]))


class TinyNet(dhm.StagedBackbone):
    """The docs' worked model family: two conv stages (strides 1, 2), pooled linear head."""

    stage_names = ("stage1", "stage2")

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 8) -> None:
        super().__init__()
        self.width, self.stem = width, torch.nn.Conv2d(in_channels, width, 3, padding=1)
        self.stage1, _ = self.make_stage(0, 1, 1.0, width)
        self.stage2, out = self.make_stage(1, 1, 1.0, width)
        self.fc = torch.nn.Linear(out, num_classes)

    def make_stage(self, index, blocks, width, in_channels):
        out = int(self.width * (index + 1) * width)
        layers = [torch.nn.Conv2d(in_channels, out, 3, stride=1 + index, padding=1), torch.nn.ReLU()]
        return torch.nn.Sequential(*layers), out

    def stage_channels(self, index):
        return self.width * (index + 1)

    def forward_stem(self, x):
        return self.stem(x).relu()

    def forward_head(self, x):
        return self.fc(x.mean((2, 3)))


def test_a_model_family_and_a_pair_graph_registered_from_outside_train(tmp_path):
    if "toy_tinynet" not in dhm.list_models():

        @dhm.register_model([dhm.BranchSpec("stage1", width=2.0)])
        def toy_tinynet(**kwargs):
            return TinyNet(**kwargs)

    if "toy-branch-teaches" not in dhm.losses.PAIR_GRAPHS:

        @dhm.losses.PAIR_GRAPHS.register("toy-branch-teaches")
        def branch_teaches(names):
            weights = torch.zeros(len(names), len(names))
            weights[1:, 0] = 1.0  # every branch teaches the main head
            return weights

    if "toy-branch-teaches" not in dhm.METHODS:
        dhm.METHODS.register("toy-branch-teaches")(
            dhm.Method(lambda loss: [dhm.TermSpec("ce"), dhm.TermSpec("pair_kl", {"graph": "toy-branch-teaches"})])
        )
    overrides = [
        "model.name=toy_tinynet",
        "model.widths=null",
        "loss.mode=toy-branch-teaches",
        "data.options.train_size=128",
        "data.options.test_size=64",
        "data.val_size=32",
        "data.batch_size=32",
        "train.epochs=1",
        "train.progress=false",
        f"train.out_dir={tmp_path}",
    ]
    summary = build_trainer(load_config("smoke", overrides)).fit()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert "train/kl/head1->main" in record and "train/kl/main->head1" not in record
    plain = load_deployed(tmp_path / "deploy.pt").model  # the deployed file rebuilds the registered family
    assert summary["test_acc1"] >= 0 and isinstance(plain, TinyNet)
