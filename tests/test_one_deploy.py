"""ONE's gated ensemble as the deployed network (``model.deploy=gate``): what deploy.pt and every export hold is
the trunk, the branches and the gate, and it gives the run's ``gate`` head."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_cifar

import dhm
from dhm.cli import main
from dhm.deployed import load_deployed
from dhm.errors import CheckpointError
from dhm.export import EXPORTERS

RUN = [
    "smoke",
    "train.progress=false",
    "train.epochs=3",
    "data.options.train_size=512",
    "data.options.test_size=256",
    "data.val_size=64",
    "data.batch_size=32",
    "optim.lr=0.05",
    "loss.mode=one",
]


def test_gated_ensemble_is_the_gate_head_and_main_stays_the_plain_backbone():
    model = tiny_cifar(branches="one:3").eval()
    x = torch.randn(3, 3, 32, 32)
    ensemble = dhm.deployable(model, "gate")
    assert isinstance(ensemble, dhm.GatedEnsemble) and dhm.deployable(model) is dhm.strip(model)
    with torch.no_grad():
        heads = model.forward_heads(x)
        torch.testing.assert_close(ensemble(x), heads.gate)
        assert not torch.allclose(ensemble(x), model(x))  # the mixture, not the main head
    assert {k.split(".")[1] for k in ensemble.state_dict()} == {"backbone", "branches", "gate"}
    with pytest.raises(ValueError, match="needs ONE's gate"):
        dhm.deployable(tiny_cifar(), "gate")


def test_a_run_deploys_the_gated_ensemble_and_its_exports_give_the_gate_head(tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["train", *RUN, "model.deploy=gate", f"train.out_dir={out}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    deployed = load_deployed(out / "deploy.pt")
    assert isinstance(deployed.model, dhm.GatedEnsemble) and not deployed.model.training
    report = dhm.evaluate_checkpoint(out / "deploy.pt")
    assert report.splits["test"]["acc1/main"] == summary["test"]["acc1/gate"]  # the deployed network is the gate
    assert summary["test"]["acc1/gate"] != summary["test"]["acc1/main"]

    x = torch.randn(2, *deployed.input_size)
    with torch.no_grad():
        want = deployed.model(x)
    for fmt, suffix in (("safetensors", ".safetensors"), ("pt", ".pt")):
        path = tmp_path / f"m{suffix}"
        EXPORTERS.get(fmt)(deployed.model, deployed.payload, path)
        with torch.no_grad():
            torch.testing.assert_close(load_deployed(path).model(x), want)
    EXPORTERS.get("torchscript")(deployed.model, deployed.payload, tmp_path / "m.ts")
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "m.ts"))(x), want)

    capsys.readouterr()
    assert main(["train", *RUN, "loss.mode=dhm", "model.deploy=gate", f"train.out_dir={tmp_path / 'dhm'}"]) == 2
    assert "model.deploy=gate: a gated ensemble needs ONE's gate" in capsys.readouterr().err

    crafted = torch.load(out / "deploy.pt", weights_only=True)
    crafted["model"]["head"] = "everything"
    torch.save(crafted, tmp_path / "crafted.pt")
    with pytest.raises(CheckpointError, match="deployed head must be one of main, gate"):
        load_deployed(tmp_path / "crafted.pt")
