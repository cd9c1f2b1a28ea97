"""Celery workers wrapping wsis_core stage functions. Land with the control-plane issue."""
