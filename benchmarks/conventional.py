"""The conventional CIFAR training pipeline, rebuilt around dhm's own ResNet-32 and DHM loss, timed per epoch.

This is how the authors' training script (and most CIFAR code) feeds a GPU: each image decoded from its file with
PIL inside DataLoader worker processes, torchvision transforms per image (4-pixel-padded random crop, horizontal
flip, ToTensor, Normalize), default collation, then fp32, NCHW, eager, the model wrapped in ``nn.DataParallel``,
batch 128, SGD with momentum. Only the model and the loss are dhm's: the comparison is about the pipeline.

Prints (and with ``--json`` writes) one JSON object: training images/s over the timed steps (after warm-up,
synchronised) and the implied seconds per 45,000-image epoch (CIFAR-10 minus the 5,000-image validation split).

    python3 benchmarks/conventional.py --data CIFAR-10-images --steps 200 --json conventional.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

import dhm

EPOCH_IMAGES = 45_000
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def import_torchvision():
    """torchvision; where its C extension cannot load next to this torch (a CPU torch with the CUDA wheel of
    torchvision), its two operator schemas are defined first: the Python parts used here need nothing else."""
    try:
        return importlib.import_module("torchvision")
    except Exception:  # noqa: BLE001 - any import failure of the C extension
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_torchvision.lib = lib  # keep the definitions alive
        return importlib.import_module("torchvision")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 JPEG root with train/<class>/*.jpg")
    parser.add_argument("--model", default="cifar_resnet32")
    parser.add_argument("--mode", default="dhm", help="ce, dsl or dhm (the loss; branches unless ce)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader worker processes (default 4)")
    parser.add_argument("--steps", type=int, default=200, help="timed steps")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (worker start-up, cuDNN)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    tv = import_torchvision()
    from torchvision import transforms

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ]
    )
    dataset = tv.datasets.ImageFolder(str(Path(args.data) / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=args.workers > 0,
    )
    torch.manual_seed(0)
    branches = "none" if args.mode == "ce" else "paper"
    model = dhm.create_model(args.model, num_classes=len(dataset.classes), branches=branches).to(device)
    model = nn.DataParallel(model) if device.type == "cuda" else model
    loss_fn = dhm.MimicLoss(mode=args.mode)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step, start, timed = 0, None, 0
    while timed < args.steps:
        for images, labels in loader:
            if step == args.warmup:
                sync()
                start = time.perf_counter()
            images, labels = images.to(device), labels.to(device)
            loss = loss_fn(model(images), labels)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            timed = step - args.warmup
            if timed >= args.steps:
                break
    sync()
    seconds = time.perf_counter() - start
    rate = args.steps * args.batch / seconds
    result = {
        "what": "conventional pipeline (PIL + DataLoader workers + torchvision transforms, fp32, NCHW, eager, "
        "DataParallel)",
        "model": args.model,
        "mode": args.mode,
        "batch": args.batch,
        "workers": args.workers,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "steps": args.steps,
        "images_per_s": rate,
        "epoch_s": EPOCH_IMAGES / rate,
        "torch": torch.__version__,
        "torchvision": tv.__version__,
    }
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
