"""Celery workers: one task per round stage, each a thin wrapper over the ``wsis_core.rounds`` stage function."""
