"""``dhm predict`` and ``dhm eval`` on every file a run or an export writes: the same model gives the same answers
whether it comes from best.pt, deploy.pt or a pt/safetensors export, with the class names, normalisation and input
size carried by the file itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dhm.cli import main
from dhm.config import load_config
from dhm.engine import build_trainer
from dhm.errors import CheckpointError
from dhm.export import export
from dhm.predict import load_deployed, load_images, predict

SMOKE = [
    "train.progress=false",
    "train.epochs=1",
    "data.options.train_size=256",
    "data.options.test_size=64",
    "data.val_size=64",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished smoke run, its exports, and a folder of PNG images (one 48x48, resized on reading)."""
    root = tmp_path_factory.mktemp("predict")
    build_trainer(load_config("smoke", [*SMOKE, f"train.out_dir={root / 'run'}"])).fit()
    files = {
        "best.pt": root / "run" / "best.pt",
        "deploy.pt": root / "run" / "deploy.pt",
        "pt": export(root / "run" / "best.pt", "pt", root / "model.pt"),
        "safetensors": export(root / "run" / "best.pt", "safetensors", root / "model.safetensors"),
    }
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate((32, 32, 48)):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    return files, images


def test_every_file_kind_predicts_the_same(run):
    files, images = run
    answers = {}
    for kind, path in files.items():
        deployed = load_deployed(path)
        assert deployed.classes == [str(c) for c in range(10)] and deployed.input_size == [3, 32, 32]
        assert len(deployed.mean) == 3 and len(deployed.std) == 3
        paths, batch = load_images([images], deployed.input_size)
        answers[kind] = predict(deployed, batch, k=3)
    assert [p.name for p in paths] == ["img0.png", "img1.png", "img2.png"]
    reference = answers["best.pt"]
    for kind, answer in answers.items():
        assert [[c for c, _ in top] for top in answer] == [[c for c, _ in top] for top in reference], kind
        for top, ref in zip(answer, reference):
            assert [p for _, p in top] == pytest.approx([p for _, p in ref], abs=1e-5)
    assert all(len(top) == 3 and 0 < sum(p for _, p in top) <= 1 + 1e-6 for top in reference)


def test_cli_predict_and_eval_on_deploy_files(run, capsys):
    files, images = run
    assert main(["predict", str(files["deploy.pt"]), str(images), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(str(images / "img0.png") + ": ")
    assert all(line.count("%") == 2 for line in lines)
    results = {}
    for kind in ("best.pt", "deploy.pt", "safetensors"):
        assert main(["eval", str(files[kind])]) == 0
        out = capsys.readouterr().out
        results[kind] = [line.split("(")[0].split("main ")[1].split()[0] for line in out.splitlines()]
    assert results["deploy.pt"] == results["safetensors"] == results["best.pt"]  # main-head val and test accuracy


def test_file_without_normalisation_is_refused_in_one_line(run, tmp_path):
    files, _ = run
    ckpt = torch.load(files["best.pt"], weights_only=True)
    del ckpt["mean"], ckpt["std"]
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="does not carry mean, std"):
        load_deployed(tmp_path / "old.pt")
    assert main(["predict", str(files["deploy.pt"]), str(tmp_path / "missing.png")]) == 2


def test_onnx_export_is_one_file_and_one_line(run, tmp_path, capsys):
    pytest.importorskip("onnx", reason="onnx export needs the onnx package (the export extra)")
    files, _ = run
    out = tmp_path / "new" / "model.onnx"  # a folder that does not exist yet
    assert main(["export", str(files["best.pt"]), "--format", "onnx", "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out) and captured.err == ""
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]  # no separate .onnx.data file
    # its input is the normalised image (README): ONNX's reference runtime on (pixels / 255 - mean) / std gives the
    # deployed model's logits
    import json

    import onnx
    from onnx.reference import ReferenceEvaluator

    proto = onnx.load(str(out))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["dhm_meta"])
    deployed = load_deployed(files["deploy.pt"])
    pixels = torch.randint(0, 256, (2, *meta["input_size"])).float()
    images = (pixels / 255 - torch.tensor(meta["mean"]).view(1, -1, 1, 1)) / torch.tensor(meta["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = deployed.model.eval()(images)
    got = ReferenceEvaluator(proto).run(None, {"images": images.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-4)
