"""BranchSpec: where a side branch forks and what it re-builds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BranchSpec:
    """One side branch.

    Attributes:
        fork: the stage after which the branch forks, by name (``"layer2"``) or index (0 = first stage).
        depths: blocks of each replicated stage after the fork, shallow to deep; empty = the backbone's own depths.
            Used by the ``replicate`` builder; the ``light`` builder ignores it; the ``linear`` builder reads the side
            of the map it classifies from ``depths=(side,)``.
        width: width multiplier, one for all replicated stages or one per stage (``replicate``), or of the
            fork's channels (``light``). For DenseNets it multiplies the growth rate.
        builder: name of a registered branch builder, ``"replicate"`` (the paper's) or ``"light"`` (DSN-style).

    Example:
        >>> BranchSpec(fork="layer2", depths=(5,), width=2.0)  # ResNet-32's head 1
        BranchSpec(fork='layer2', depths=(5,), width=2.0, builder='replicate')
    """

    fork: str | int
    depths: tuple[int, ...] = ()
    width: float | tuple[float, ...] = 1.0
    builder: str = "replicate"

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        if isinstance(self.width, (list, tuple)):
            object.__setattr__(self, "width", tuple(float(w) for w in self.width))
        if any(d < 1 for d in self.depths):
            raise ValueError(f"branch depths must be >= 1, got {self.depths}")
        widths = self.width if isinstance(self.width, tuple) else (self.width,)
        if any(w <= 0 for w in widths):
            raise ValueError(f"branch width multipliers must be > 0, got {self.width}")

    def widths(self, n: int) -> tuple[float, ...]:
        """The width multiplier of each of ``n`` replicated stages."""
        if isinstance(self.width, tuple):
            if len(self.width) != n:
                raise ValueError(f"branch forking at {self.fork!r} has {n} stages but {len(self.width)} widths")
            return self.width
        return (float(self.width),) * n
