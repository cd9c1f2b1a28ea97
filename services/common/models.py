"""Control-plane data model (SQLAlchemy 2.x): datasets, runs, rounds, jobs, artifacts, metrics.

Statuses and artifact kinds are stored as plain strings with CHECK constraints (no native enum
types), so the same migration runs on PostgreSQL and SQLite.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column, relationship

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
ACTIVE_STATUSES = (QUEUED, RUNNING)


def utcnow() -> datetime:
    """Timezone-aware current time in UTC."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp that always comes back timezone-aware in UTC (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Dataset(Base):
    """A registered dataset folder (relative to ``WSIS_DATA_ROOT``) with its classes and split sizes."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    path: Mapped[str] = mapped_column(String(1000))
    train_split: Mapped[str] = mapped_column(String(100))
    val_split: Mapped[str | None] = mapped_column(String(100))  # None: no val split (no evaluation)
    classes: Mapped[list] = mapped_column(JSON)
    num_train_images: Mapped[int] = mapped_column(Integer)
    num_val_images: Mapped[int] = mapped_column(Integer)
    # {"train": {"images", "with_ground_truth", "ground_truth"}, "val": {...} or None}; None: registered before 0002
    ground_truth: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    runs: Mapped[list[Run]] = relationship(back_populates="dataset")


class Run(Base):
    """One training run on a dataset: its config (profile, supervision, ablation switches, seed) and rounds."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    config: Mapped[dict] = mapped_column(JSON)
    # Rounds the run launches by itself: when round k < this succeeds, round k+1 is queued in the same transaction.
    rounds_to_launch: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    dataset: Mapped[Dataset] = relationship(back_populates="runs")
    rounds: Mapped[list[Round]] = relationship(
        back_populates="run", order_by="Round.number", cascade="all, delete-orphan"
    )


class Round(Base):
    """Round ``number`` (from 1) of a run; its jobs run in order, one Celery task each."""

    __tablename__ = "rounds"
    __table_args__ = (
        UniqueConstraint("run_id", "number"),
        CheckConstraint(_in("status", STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Outbox: set (with the jobs' change to queued) while queued jobs of the round wait to be sent to the
    # broker, cleared once they were sent; the recovery loop sends those a crash left behind.
    undispatched_since: Mapped[datetime | None] = mapped_column(UTCDateTime)

    run: Mapped[Run] = relationship(back_populates="rounds")
    jobs: Mapped[list[Job]] = relationship(
        back_populates="round", order_by="Job.position", cascade="all, delete-orphan"
    )
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="round", order_by="Artifact.id", cascade="all, delete-orphan"
    )
    metrics: Mapped[list[Metric]] = relationship(
        back_populates="round", order_by="Metric.id", cascade="all, delete-orphan"
    )


class Job(Base):
    """One stage of a round: status, progress 0-1, Celery task id, attempts, timings, error, lease heartbeat."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("round_id", "stage"),
        CheckConstraint(_in("status", STATUSES), name="status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    queue: Mapped[str] = mapped_column(String(16))
    device: Mapped[str | None] = mapped_column(String(32))  # where its last attempt ran (cpu, cuda); None before
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    celery_task_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts lost with their worker since the job was last launched; at WSIS_MAX_ATTEMPTS the job fails.
    lost_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    # Renewed by the worker running the job; a running job whose heartbeat is older than the lease was lost.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    round: Mapped[Round] = relationship(back_populates="jobs")


class Artifact(Base):
    """A file or folder a stage produced, by path relative to ``WSIS_ARTIFACT_ROOT``; one per (round, stage, kind).

    Kinds include mil_boxes, ccgr_boxes, pseudo_labels, model, metrics and score_maps; a stage may
    report others (classifier, peaks, proposals, ...).
    """

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("round_id", "stage", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1000))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    round: Mapped[Round] = relationship(back_populates="artifacts")


class Metric(Base):
    """One evaluation number of a round on a split (``value`` is null where the metric is undefined)."""

    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("round_id", "split", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    split: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float | None] = mapped_column(Float)

    round: Mapped[Round] = relationship(back_populates="metrics")


# What a run's recorded artifacts take in the store (the status page shows it); a correlated subquery, no column.
Run.storage_bytes = column_property(
    select(func.coalesce(func.sum(Artifact.size), 0)).join(Round, Round.id == Artifact.round_id)
    .where(Round.run_id == Run.id).correlate_except(Artifact, Round).scalar_subquery(),
    deferred=False,
)
