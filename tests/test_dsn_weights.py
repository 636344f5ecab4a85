"""DSN's companion weights per auxiliary head (``loss.options.aux_weight=[w_1, ..., w_M]``, DSN's alpha_m), decaying
together; a list that does not match the heads is refused when the loss is built."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dhm.config import load_config
from dhm.engine.build import build_loss
from dhm.errors import ConfigError

NAMES = ("main", "head1", "head2")


def test_each_auxiliary_head_has_its_own_weight_and_they_decay_together():
    cfg = load_config(
        "smoke", ["loss.mode=dsn", "train.epochs=4", "loss.options.aux_weight=[0.3,0.7]", "loss.options.aux_stop=2"]
    )
    loss_fn = build_loss(cfg, NAMES, num_classes=5).double()
    loss_fn.set_progress(1.0)  # half way to the stop: every weight at half its start
    g = torch.Generator().manual_seed(8)
    heads = [torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in NAMES]
    y = torch.randint(0, 5, (6,), generator=g)
    out = loss_fn(heads, y)
    ce = [F.cross_entropy(h, y) for h in heads]
    torch.testing.assert_close(out["loss"], ce[0] + 0.5 * (0.3 * ce[1] + 0.7 * ce[2]), rtol=1e-12, atol=1e-12)
    assert out["aux_weight"].item() == pytest.approx(0.5 * 0.5)  # the weights' mean, decayed


def test_a_list_of_weights_must_match_the_auxiliary_heads():
    cfg = load_config("smoke", ["loss.mode=dsn", "loss.options.aux_weight=[1,2,3]"])
    with pytest.raises(ConfigError, match="3 weights for 2 auxiliary heads"):
        build_loss(cfg, NAMES, num_classes=5)
    with pytest.raises(ConfigError, match="loss.options.aux_weight must be >= 0"):
        load_config("smoke", ["loss.mode=dsn", "loss.options.aux_weight=[1,-2]"])
