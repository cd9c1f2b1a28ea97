"""The layer below the API and the workers: settings, database, data model, path confinement, the artifact store
and the job data-access layer. It imports ``wsis_core`` at most, never ``services.api`` or ``services.workers``."""
