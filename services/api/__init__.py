"""FastAPI control plane: routes (datasets, runs, rounds, jobs, artifacts, metrics)."""
