"""FastAPI control plane: settings, data model, database, routes (datasets, runs, rounds, jobs, artifacts, metrics)."""
