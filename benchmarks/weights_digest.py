"""The SHA-256 of a checkpoint's weights (every tensor of its state dict, in key order, names included), so that runs
fine-tuned from a backbone made on another machine can be checked to start from the same weights: the file's own
bytes also hold metadata that may differ.

    python benchmarks/weights_digest.py pretrained/cifar10-pretrain/deploy.pt
"""

from __future__ import annotations

import hashlib
import sys

import torch


def digest(path: str) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every tensor of ``path``'s state dict (``state_dict`` or
    ``model`` entry, else the file itself)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt.get("model", ckpt)) if isinstance(ckpt, dict) else ckpt
    h = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        if isinstance(tensor, torch.Tensor):
            t = tensor.detach().cpu().contiguous().reshape(-1)
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/weights_digest.py CHECKPOINT")
    print(digest(sys.argv[1]))
