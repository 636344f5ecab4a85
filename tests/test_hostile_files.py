"""Hostile files against the newer features (issue: never a traceback, never a user's file lost, never a silent
skew): a user's folder as train.out_dir, crafted deployed metadata, foreign exceptions at every boundary where
files are read or written, crafted recipes, and one image decoder for training and deployment. Every refusal is
one ``dhm: error:`` line with exit code 2, and leaves a finished run directory byte-identical."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_RUN
from PIL import Image

from dhm.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", "smoke", *TINY_RUN, f"train.out_dir={folder}"]) == 0
    return folder


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def _deploy(run: Path, root: Path, name: str, edit) -> Path:
    obj = torch.load(run / "deploy.pt", weights_only=True)
    edit(obj)
    torch.save(obj, root / name)
    return root / name


def _safetensors(run: Path, root: Path, name: str, meta: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    obj = torch.load(run / "deploy.pt", weights_only=True)
    save_file(obj["state_dict"], str(root / name), metadata=meta)
    return root / name


def _spec(**changes):
    return lambda obj: obj["model"].update(changes)


def _drop(key):
    return lambda obj: obj["model"].pop(key)


def _set(key, value):
    return lambda obj: obj.__setitem__(key, value)


@pytest.fixture(scope="module")
def files(run, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crafted")
    out: dict[str, Path] = {}
    edits = {
        "spec-not-mapping": _set("model", "cifar_resnet20"),
        "spec-lacks-key": _drop("in_channels"),
        "spec-unknown-kwarg": _spec(kwargs={"bogus": 1}),
        "negative-classes": _spec(num_classes=-3),
        "huge-classes": lambda obj: (obj["model"].update(num_classes=5_000_000), obj.update(classes=[])),
        "huge-widths": _spec(kwargs={"widths": [1 << 20, 1 << 20, 1 << 20]}),
        "mean-length": _set("mean", [0.5]),
        "zero-std": _set("std", [0.0, 0.2, 0.2]),
        "input-size-2": _set("input_size", [3, 32]),
        "input-size-0": _set("input_size", [3, 0, 32]),
        "few-classes": _set("classes", ["a", "b"]),
        "config-list": _set("config", [1, 2]),
        "nan-mean": _set("mean", [float("nan"), 0.5, 0.5]),
    }
    for name, edit in edits.items():
        out[name] = _deploy(run, root, f"{name}.pt", edit)
    spec = json.dumps(torch.load(run / "deploy.pt", weights_only=True)["model"])
    out["st-not-json"] = _safetensors(run, root, "a.safetensors", {"dhm_model": "{not json"})
    out["st-list"] = _safetensors(run, root, "b.safetensors", {"dhm_model": "[1, 2]"})
    out["st-meta-zero-std"] = _safetensors(
        run, root, "c.safetensors", {"dhm_model": spec, "dhm_meta": json.dumps({"std": [0, 0, 0]})}
    )
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "img.png")
    out["img"] = root / "img.png"
    Image.fromarray(np.zeros((48, 48), dtype=np.uint8)).save(root / "bomb.png")  # > 2 x the lowered pixel limit
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(root / "bomb-warn.png")  # over the limit, under 2 x
    out["bomb"], out["bomb-warn"] = root / "bomb.png", root / "bomb-warn.png"
    recipes = {
        "base-int.yaml": "_base_: 3\n",
        "base-list.yaml": "_base_: [a, b]\n",
        "base-device.yaml": "_base_: /dev/zero\n",
        "base-secret.yaml": "_base_: secret.yaml\n",
        "secret.yaml": "ghp_TOKEN_abc123: hunter2\n",
        "base-missing.yaml": "_base_: nowhere.yaml\n",
        "base-bundled.yaml": "_base_: demo\ntrain:\n  epochs: 1\n",
        "empty-section.yaml": "train:\nmodel:\n  name: cifar_resnet20\n",
        "deep.yaml": "model: " + "[" * 3000 + "]" * 3000 + "\n",
        "nested.yaml": "model:\n  options: " + "{a: " * 40 + "1" + "}" * 40 + "\n",
        "big.yaml": "# " + "x" * (1 << 20) + "\n",
    }
    laughs = "model:\n  options:\n    a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        laughs += f"    {cur}: &{cur} [{', '.join([f'*{prev}'] * 10)}]\n"
    recipes["laughs.yaml"] = laughs
    for name, text in recipes.items():
        (root / name).write_text(text)
        out[name] = root / name
    return out


def _predict(key: str):
    return lambda r, f: ["predict", str(f[key]), str(f["img"])]


CASES = {
    # 2. crafted deployed metadata: one line naming the field
    "spec not a mapping": (_predict("spec-not-mapping"), "the model spec must be a mapping"),
    "spec lacks a key": (_predict("spec-lacks-key"), "the model spec lacks in_channels"),
    "unknown model kwarg": (_predict("spec-unknown-kwarg"), "model kwargs"),
    "negative class count": (_predict("negative-classes"), "num_classes must be an integer"),
    "huge class count": (_predict("huge-classes"), "does not fit this model"),
    "huge widths": (_predict("huge-widths"), "does not fit this model"),
    "mean of the wrong length": (_predict("mean-length"), "mean must be 3 finite number(s)"),
    "zero std": (_predict("zero-std"), "std must be positive"),
    "NaN mean": (_predict("nan-mean"), "mean must be 3 finite"),
    "input size of two numbers": (_predict("input-size-2"), "input_size must be [channels, height, width]"),
    "input size 0": (_predict("input-size-0"), "input_size side must be an integer"),
    "fewer class names than outputs": (_predict("few-classes"), "classes has 2 names for 10 outputs"),
    "config not a mapping": (lambda r, f: ["eval", str(f["config-list"])], "config must be a mapping"),
    "safetensors metadata not JSON": (_predict("st-not-json"), "'dhm_model' is not a JSON object"),
    "safetensors metadata a list": (_predict("st-list"), "'dhm_model' is not a JSON object"),
    "safetensors zero std": (_predict("st-meta-zero-std"), "std must be positive"),
    # 3. foreign exceptions
    "decompression bomb": (lambda r, f: ["predict", str(r / "deploy.pt"), str(f["bomb"])], "decompression bombs"),
    "bomb warning": (lambda r, f: ["predict", str(r / "deploy.pt"), str(f["bomb-warn"])], "decompression bombs"),
    "checkpoint as a recipe": (lambda r, f: ["config", str(r / "last.pt")], "is not a text (UTF-8) file"),
    "deeply nested YAML": (lambda r, f: ["config", str(f["deep.yaml"])], "nests too deeply"),
    "YAML deeper than the bound": (lambda r, f: ["config", str(f["nested.yaml"])], "nests deeper than 32 levels"),
    "huge widths in training": (
        lambda r, f: ["train", "smoke", "model.widths=[100000,100000,100000]", "train.out_dir=" + str(r)],
        "needs about",
    ),
    "huge image size": (lambda r, f: ["train", "smoke", "data.image_size=100000"], "<= 16384 pixels a side"),
    "safetensors to an unwritable folder": (
        lambda r, f: ["export", str(r / "deploy.pt"), "--format", "safetensors", "-o", "/sys/dhm.safetensors"],
        "cannot write /sys/dhm.safetensors",
    ),
    "TorchScript to an unwritable folder": (
        lambda r, f: ["export", str(r / "deploy.pt"), "--format", "torchscript", "-o", "/proc/dhm.ts"],
        "cannot write /proc/dhm.ts",
    ),
    "bench --steps 0": (lambda r, f: ["bench", "--steps", "0"], "--steps must be >= 1"),
    "bench --classes 0": (lambda r, f: ["bench", "--classes", "0"], "--classes must be >= 1"),
    "inspect --classes 0": (lambda r, f: ["inspect", "cifar_resnet20", "--classes", "0"], "--classes must be >= 1"),
    "inspect a tiny input": (lambda r, f: ["inspect", "cifar_resnet20", "--input-size", "2"], "cannot probe"),
    # 4. recipes
    "_base_ an integer": (lambda r, f: ["config", str(f["base-int.yaml"])], "_base_ must be a bundled recipe name"),
    "_base_ a list": (lambda r, f: ["config", str(f["base-list.yaml"])], "_base_ must be a bundled recipe name"),
    "_base_ a device": (lambda r, f: ["config", str(f["base-device.yaml"])], "neither a bundled recipe nor a .yaml"),
    "_base_ missing": (lambda r, f: ["config", str(f["base-missing.yaml"])], "is not a file"),
    "_base_ a foreign file": (lambda r, f: ["config", str(f["base-secret.yaml"])], "is not a dhm recipe"),
    "alias bomb": (lambda r, f: ["config", str(f["laughs.yaml"])], "expands to over 100,000 items"),
    "recipe over 1 MiB": (lambda r, f: ["config", str(f["big.yaml"])], "larger than 1 MiB"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_is_one_line_and_exit_2(case, run, files, tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the bomb images are 48x48 and 40x40
    argv, expected = CASES[case]
    before = _digest(run)
    capsys.readouterr()
    code = main(argv(run, files))
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("dhm: error: ") and expected in err[0], err
    assert "ghp_TOKEN" not in captured.err + captured.out and "hunter2" not in captured.err + captured.out
    assert _digest(run) == before


def test_users_folder_is_refused_and_never_tidied(run, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.yaml").write_text("my: settings\n")
    (folder / "metrics.csv").write_text("a,b\n1,2\n")
    (folder / "loss.png").write_bytes(b"my plot")
    (folder / ".draft.tmp").write_text("hidden work")
    before = _digest(folder)
    capsys.readouterr()
    assert main(["train", "smoke", *TINY_RUN, f"train.out_dir={folder}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds files dhm did not write (.draft.tmp, config.yaml, loss.png and 1 more)" in err[0]
    assert _digest(folder) == before and not (folder / ".lock").exists()
    # with train.overwrite=true the run goes ahead, and a temporary file dhm did not name survives its clean-up
    assert main(["train", "smoke", *TINY_RUN, f"train.out_dir={folder}", "train.overwrite=true"]) == 0
    assert (folder / ".draft.tmp").read_text() == "hidden work" and (folder / "deploy.pt").is_file()


def test_a_crashed_runs_leftovers_go_and_a_dhm_config_is_dhms(run, tmp_path):
    folder = tmp_path / "early"
    folder.mkdir()
    (folder / "config.yaml").write_text((run / "config.yaml").read_text())  # a run killed before its first epoch
    (folder / ".last.pt.k3j2.tmp").write_bytes(b"half a checkpoint")
    (folder / ".mine.tmp").write_text("keep")
    assert main(["train", "smoke", *TINY_RUN, f"train.out_dir={folder}", "train.overwrite=true"]) == 0
    assert not (folder / ".last.pt.k3j2.tmp").exists() and (folder / ".mine.tmp").read_text() == "keep"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.yaml").write_text((run / "config.yaml").read_text())
    assert main(["train", "smoke", *TINY_RUN, f"train.out_dir={fresh}"]) == 0  # its own config: no refusal


def test_an_empty_section_then_an_override_and_a_bundled_base(files, capsys):
    assert main(["config", str(files["empty-section.yaml"]), "train.epochs=3"]) == 0
    assert "epochs: 3" in capsys.readouterr().out
    assert main(["config", str(files["base-bundled.yaml"])]) == 0
    out = capsys.readouterr().out
    assert "name: digits" in out and "epochs: 1" in out  # the bundled demo recipe under the file's change


def test_write_failures_of_torch_and_safetensors_are_one_line(run, tmp_path, monkeypatch, capsys):
    import safetensors.torch

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", full_disk)
    capsys.readouterr()
    assert main(["export", str(run / "deploy.pt"), "--format", "pt", "-o", str(tmp_path / "a.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is the disk full?" in err[0] and not list(tmp_path.iterdir())

    def safetensors_error(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(safetensors.torch, "save_file", safetensors_error)
    assert main(["export", str(run / "deploy.pt"), "--format", "safetensors", "-o", str(tmp_path / "a.st")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and not list(tmp_path.iterdir())  # no partial file left


def test_allocation_failures_and_sizes_that_cannot_fit(run, tmp_path, monkeypatch, capsys):
    import dhm.errors
    import dhm.memory
    from dhm.data.folder import FileSource, decode_all

    monkeypatch.setattr(dhm.memory, "physical_bytes", lambda: 1 << 20)
    source = FileSource([tmp_path / f"{i}.png" for i in range(100)], torch.zeros(100, dtype=torch.int64))
    with pytest.raises(dhm.errors.DHMError, match=r"100 images at 256x256 needs about 0.0 GB, more than"):
        decode_all(source, 256)  # refused before a single file is opened (none of them exists)

    def no_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 460032000000 bytes")

    import dhm.cli

    monkeypatch.setattr(dhm.cli, "cmd_train", no_memory)
    capsys.readouterr()
    code = main(["train", "smoke", f"train.out_dir={tmp_path / 'x'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("dhm: error: out of memory"), err


def test_training_and_predict_decode_an_image_alike(tmp_path):
    from dhm.data.folder import load_image
    from dhm.predict import load_images

    ramp = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).astype(np.uint16)  # 16 bit, up to 61,380
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    trained = load_image(tmp_path / "deep.png")
    _, predicted = load_images([tmp_path / "deep.png"], [3, 32, 32])
    assert np.array_equal(predicted[0].permute(1, 2, 0).numpy(), trained) and trained.max() > 230
