"""Deployable services around wsis_core: the FastAPI control plane and the Celery workers."""
