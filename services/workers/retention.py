"""Retention of checkpoints (``WSIS_KEEP_MODELS=needed``): a round writes ~300 MB of checkpoints whatever the data
size, and most of them are read by no one once the round succeeded.

Kept: every round's IS model (``model.pt``: the next round's cues and IS warm start read it, and it is what
``GET /api/rounds/{id}/model`` serves), round 1's classifier (``models/classifier.pt``: every round's branches start
from its backbone) and the latest SS checkpoint (``models/segmentation.pt``: the next round's ss stage warm-starts
from it). Dropped, from succeeded rounds only: the affinity and MIL checkpoints (``models/affinity.pt``,
``models/mil.pt``: only their own round's stages read them), the classifier of a later round, and a round's SS
checkpoint once a later round's ss stage succeeded. A round that is not finished keeps
everything, so resuming it never misses an input. The dropped checkpoints' Artifact rows go with them, so a
launch does not take them for lost artifacts to rebuild.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, select

from services.common.artifact_store import ArtifactStore
from services.common.db import session_scope
from services.common.models import SUCCEEDED, Artifact, Job, Round
from services.common.settings import Settings
from wsis_core import run_layout

ONLY_OWN_ROUND = (run_layout.AFFINITY, run_layout.MIL)

log = logging.getLogger(__name__)


def unneeded_checkpoints(rows: list[tuple[int, int, str]], ss_done: set[int]) -> list[int]:
    """Ids of the droppable checkpoints among ``rows`` ((artifact id, round number, key) of a run's succeeded
    rounds), given the numbers of the rounds whose ss stage succeeded."""
    dropped = []
    for artifact_id, number, key in rows:
        if any(key.endswith("/" + name) for name in ONLY_OWN_ROUND):
            dropped.append(artifact_id)
        elif key.endswith("/" + run_layout.CLASSIFIER) and number > 1:
            dropped.append(artifact_id)
        elif key.endswith("/" + run_layout.SEGMENTATION) and any(later > number for later in ss_done):
            dropped.append(artifact_id)
    return dropped


def drop_unneeded_checkpoints(settings: Settings, store: ArtifactStore, run_id: int) -> int:
    """Delete the run's unneeded checkpoints (objects, scratch copies, rows); returns the bytes freed."""
    with session_scope(settings.database_url) as session:
        rows = session.execute(
            select(Artifact.id, Round.number, Artifact.path, Artifact.size).join(Round, Round.id == Artifact.round_id)
            .where(Round.run_id == run_id, Round.status == SUCCEEDED)
        ).all()
        ss_done = set(session.scalars(
            select(Round.number).join(Job, Job.round_id == Round.id)
            .where(Round.run_id == run_id, Job.stage == "ss", Job.status == SUCCEEDED)))
        dropped = set(unneeded_checkpoints([(r.id, r.number, r.path) for r in rows], ss_done))
        freed = 0
        for row in rows:
            if row.id in dropped:
                store.delete(row.path)
                if settings.object_store:
                    (store.local_root / row.path).unlink(missing_ok=True)
                freed += row.size
        if dropped:
            session.execute(delete(Artifact).where(Artifact.id.in_(dropped)))
    if freed:
        log.info("run %s: dropped %d checkpoints (%d bytes) no later round, resume or download needs",
                 run_id, len(dropped), freed)
    return freed
