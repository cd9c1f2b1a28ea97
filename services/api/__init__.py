"""FastAPI control plane (datasets, runs, rounds, jobs, artifacts, metrics). Lands with the control-plane issue."""
