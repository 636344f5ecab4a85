"""Deployment exports of a trained run, branches stripped: safetensors, pt, TorchScript, ONNX."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .branches import has_neck
from .deployed import INFO_KEYS, SAFETENSORS_META, SAFETENSORS_MODEL, load_plain
from .errors import DHMError
from .files import refuse_input_as_output, save_atomic, write_via_temp
from .registry import Registry

EXPORTERS: Registry[Callable[[nn.Module, dict[str, Any], Path], None]] = Registry("export format")
SUFFIX = {"safetensors": ".safetensors", "pt": ".pt", "torchscript": ".ts", "onnx": ".onnx"}


def _example(payload: dict[str, Any]) -> torch.Tensor:
    size = payload.get("input_size") or [payload["model"]["in_channels"], 224, 224]
    return torch.randn(1, *size)


@EXPORTERS.register("pt")
def export_pt(model: nn.Module, payload: dict[str, Any], out: Path) -> None:
    """The deploy dict (state_dict + model spec); ``torch.load(..., weights_only=True)`` reads it."""
    save_atomic(payload, out)


@EXPORTERS.register("safetensors")
def export_safetensors(model: nn.Module, payload: dict[str, Any], out: Path) -> None:
    """Tensors only; the model spec and the class names, normalisation, input size and config as JSON metadata
    (``dhm predict`` and ``dhm eval`` read them; needs the ``safetensors`` package)."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise DHMError("safetensors export needs the safetensors package: pip install safetensors") from None
    meta = {k: payload.get(k) for k in INFO_KEYS}
    metadata = {SAFETENSORS_MODEL: json.dumps(payload["model"]), SAFETENSORS_META: json.dumps(meta)}
    write_via_temp(out, lambda tmp: save_file(payload["state_dict"], tmp, metadata=metadata))


@EXPORTERS.register("torchscript")
def export_torchscript(model: nn.Module, payload: dict[str, Any], out: Path) -> None:
    """A traced TorchScript module (``torch.jit.load``)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, _example(payload))
    write_via_temp(out, traced.save)


@EXPORTERS.register("onnx")
def export_onnx(model: nn.Module, payload: dict[str, Any], out: Path) -> None:
    """ONNX with a dynamic batch dimension (needs the ``onnx`` package): input ``images``, output ``logits`` (or
    ``embedding`` for a re-ID model with a BNNeck); the mean, std, input size and class names in the model's
    metadata (``metadata_props``: ``dhm_meta`` as JSON)."""
    try:
        import onnx
    except ImportError:
        raise DHMError("onnx export needs the onnx package: pip install onnx onnxscript") from None
    write_via_temp(out, lambda tmp: _write_onnx(model, payload, tmp, onnx))


def _write_onnx(model: nn.Module, payload: dict[str, Any], out: str, onnx: Any) -> None:
    import contextlib
    import inspect
    import io
    import warnings

    output = "embedding" if has_neck(model) else "logits"
    kwargs = {}
    if "external_data" in inspect.signature(torch.onnx.export).parameters:
        kwargs["external_data"] = False  # one self-contained file (the weights of these models are small)
    # The exporter narrates its passes and warns about its own internals: the user gets the path, nothing else.
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (_example(payload),),
            out,
            input_names=["images"],
            output_names=[output],
            dynamic_axes={"images": {0: "batch"}, output: {0: "batch"}},
            **kwargs,
        )
    proto = onnx.load(out)
    info = {k: payload.get(k) for k in ("classes", "mean", "std", "input_size")}
    entry = proto.metadata_props.add()
    entry.key, entry.value = "dhm_meta", json.dumps({**info, "output": output})
    onnx.save(proto, out)


def export(path: str | Path, fmt: str, output: str | Path | None = None) -> Path:
    """Export the stripped backbone of checkpoint ``path`` as ``fmt``; returns the written file."""
    exporter = EXPORTERS.get(fmt)
    model, payload = load_plain(path)
    out = Path(output).expanduser() if output else Path(path).with_name(f"{Path(path).stem}-deploy{SUFFIX[fmt]}")
    refuse_input_as_output(out, [path], "dhm export")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DHMError(f"cannot write {out}: {exc.strerror or exc}") from None
    exporter(model, payload, out)
    return out
