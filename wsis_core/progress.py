"""Progress callbacks: ``on_progress(done, total)`` of every long step, and the phases a stage splits into."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Progress = Callable[[int, int], None] | None


@dataclass(frozen=True)
class Phase:
    """One phase of a stage: its name, the unit its steps count (``it``: training iterations, ``img``: images,
    ``batch``: inference batches) and its share of the stage's progress."""

    name: str
    unit: str
    weight: float


def phases(on_progress: Progress, *parts: Phase) -> list[Progress]:
    """Split one stage's ``on_progress`` over consecutive phases whose step counts are not known in
    advance.

    A callback with a ``phase(name, unit)`` method (the command line's progress bars) gets one callback per
    phase from it, counting that phase's own steps in its unit. Any other callback (a worker's job progress)
    sees one progress: phase i reports its own (done, total) and moves the stage's progress over its share
    ``weight / sum(weights)``, in per mille of the stage.
    """
    if on_progress is None:
        return [None] * len(parts)
    if hasattr(on_progress, "phase"):
        return [on_progress.phase(part.name, part.unit) for part in parts]
    weights = [part.weight for part in parts]
    scale = 1000 / sum(weights)
    offsets = [sum(weights[:i]) for i in range(len(weights))]
    return [
        lambda done, total, offset=offset, weight=weight: on_progress(
            round((offset + weight * min(done, total) / max(total, 1)) * scale), 1000
        )
        for offset, weight in zip(offsets, weights)
    ]
