"""The stage plans dhm finds on the sampled torchvision and timm families: `dhm inspect NAME 1 2:light` for each
(a replicated branch at fork 1, a light head at fork 2, 10 classes, 224x224 probe), as one markdown table.

    python benchmarks/families.py [--json OUT]

Where torchvision's C extension cannot load next to the installed torch (a CUDA torchvision wheel beside a CPU
torch), its two operator schemas are defined first, as the tests do, so that its Python model code imports."""

from __future__ import annotations

import argparse
import importlib
import json

import torch

FAMILIES = [
    "torchvision:resnet18", "torchvision:resnext50_32x4d", "torchvision:wide_resnet50_2",
    "torchvision:mobilenet_v2", "torchvision:mobilenet_v3_large", "torchvision:efficientnet_b0",
    "torchvision:regnet_y_400mf", "torchvision:convnext_tiny", "torchvision:densenet121", "torchvision:vgg11_bn",
    "timm:resnet50", "timm:efficientnet_b0", "timm:convnext_nano", "timm:regnety_008",
    "timm:mobilenetv3_large_100", "timm:densenet121",
]  # fmt: skip


def _import_torchvision() -> None:
    try:
        importlib.import_module("torchvision")
    except Exception:  # noqa: BLE001  (the CUDA build's C extension beside a CPU torch)
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _import_torchvision.lib = lib
        importlib.import_module("torchvision")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    ns = parser.parse_args()
    _import_torchvision()
    from dhm.model_report import inspect_model

    rows = []
    print("| model | plan from | stages (module: channels @ reduction) | branched / plain FLOPs |")
    print("|---|---|---|---:|")
    for name in FAMILIES:
        torch.manual_seed(0)
        try:
            r = inspect_model(name, ["1", "2:light"], num_classes=10, input_size=224)
        except Exception as exc:  # noqa: BLE001  (report the family that failed and go on)
            print(f"| {name} | failed | {type(exc).__name__}: {exc} | |")
            rows.append({"model": name, "error": str(exc)})
            continue
        stages = ", ".join(f"{s['module']}: {s['channels']} @ {s['reduction']}" for s in r["stages"])
        print(f"| {name} | {r['source']} | {len(r['stages'])}: {stages} | {r['flops']['ratio']:.2f} |")
        rows.append({k: r[k] for k in ("model", "source", "stages", "parameters", "flops")})
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
