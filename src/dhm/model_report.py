"""``dhm inspect``: the stages dhm finds in a model, its branches, their sizes and the FLOP cost of training them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .branches import BranchSpec, stage_plan
from .branches.plan import example_input
from .errors import DHMError, first_line
from .models import create_model
from .models.hubs import default_branches, split_name
from .models.registry import paper_branches


def parse_spec(text: str) -> BranchSpec:
    """``FORK`` or ``FORK:BUILDER`` (fork by stage index or module path), or a YAML mapping of BranchSpec fields
    such as ``{fork: 1, depths: [2], width: 2}``."""
    try:
        if text.lstrip().startswith("{"):
            fields = yaml.safe_load(text)
            if not isinstance(fields, dict):
                raise ValueError("not a mapping")
            return BranchSpec(**fields)
        fork, _, builder = text.partition(":")
        return BranchSpec(fork=int(fork) if fork.lstrip("-").isdigit() else fork, builder=builder or "replicate")
    except (TypeError, ValueError, yaml.YAMLError) as exc:
        raise DHMError(f"bad branch spec {text!r}: {exc} (use FORK, FORK:light or '{{fork: 1, depths: [2]}}')")


def _flops(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def inspect_model(
    name: str, specs: Sequence[str] = (), num_classes: int | None = None, input_size: int | None = None
) -> dict[str, Any]:
    """Stages (module, channels, reduction, blocks), branches with their parameter counts, and the forward FLOPs
    of the branched model (every head, train mode) against the plain one, on one ``input_size`` image."""
    try:
        plain = create_model(name, num_classes=num_classes, branches="none")
        plan = stage_plan(plain, input_size=input_size)
        from .branches import LAYOUTS, layout_specs

        if len(specs) == 1 and specs[0].partition(":")[0] in LAYOUTS:  # a named layout, as model.branches takes
            branch_specs = layout_specs(specs[0], plan)
        elif specs:
            branch_specs = [parse_spec(s) for s in specs]
        else:
            branch_specs = list(paper_branches(name) if split_name(name) is None else default_branches(plan))
        from .branches import attach_branches

        model = attach_branches(plain, branch_specs, plan=plan)
    except (TypeError, ValueError, KeyError) as exc:
        raise DHMError(str(exc).strip("'\"")) from None
    except RuntimeError as exc:  # the probe forward of the stage plan, on a user-given input size
        raise DHMError(f"cannot probe {name} at --input-size {input_size}: {first_line(exc, 120)}") from None
    x = example_input(plain, input_size)
    model.train()
    branched_flops = _flops(model, torch.cat([x, x]))  # batch 2: BatchNorm in train mode needs more than one value
    plain.train()
    plain_flops = _flops(plain, torch.cat([x, x]))
    count = lambda m: sum(p.numel() for p in m.parameters())
    return {
        "model": name,
        "source": plan.source,
        "input": list(x.shape[1:]),
        "stages": plan.describe(),
        "branches": [
            {"head": head, "spec": spec, "parameters": count(branch)}
            for (head, branch), spec in zip(model.branches.items(), branch_specs)
        ],
        "parameters": {"backbone": count(plain), "branched": count(model)},
        "flops": {"plain": plain_flops // 2, "branched": branched_flops // 2, "ratio": branched_flops / plain_flops},
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as the lines ``dhm inspect`` prints."""
    lines = [f"{report['model']}: stage plan from {report['source']}, probed with a {report['input']} input", ""]
    lines.append(f"{'stage':>5}  {'module':40s} {'channels':>8} {'reduction':>9} {'blocks':>6}")
    for s in report["stages"]:
        lines.append(f"{s['stage']:>5}  {s['module']:40s} {s['channels']:>8} {s['reduction']:>9} {s['blocks']:>6}")
    lines.append("")
    for b in report["branches"]:
        spec = b["spec"]
        desc = f"fork {spec.fork!r}, {spec.builder}"
        if spec.depths:
            desc += f", depths {list(spec.depths)}"
        if spec.width != 1.0:
            desc += f", width {spec.width}"
        lines.append(f"{b['head']:6s} {desc:50s} {b['parameters']:>12,} parameters")
    p, f = report["parameters"], report["flops"]
    lines.append(f"{'main':6s} {'the backbone':50s} {p['backbone']:>12,} parameters")
    lines.append("")
    lines.append(
        f"forward FLOPs per image: plain {f['plain'] / 1e6:,.1f} M, branched {f['branched'] / 1e6:,.1f} M "
        f"(ratio {f['ratio']:.2f})"
    )
    return "\n".join(lines)
