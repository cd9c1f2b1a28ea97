# wsis image: the library, the `wsis` CLI, the API (uvicorn) and the Celery worker.
# docker-compose.yml picks the command of each service; the default is `wsis --help`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# libgl/libglib for OpenCV's ximgproc (selective search), make for the two-command workflow
RUN apt-get update \
    && apt-get install -y --no-install-recommends make libglib2.0-0 libgl1 \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first, in their own layer: a code change does not reinstall torch. The empty packages let pip
# resolve the project's dependencies from pyproject.toml alone; the code replaces them below.
COPY pyproject.toml README.md ./
RUN mkdir -p wsis_core services && touch wsis_core/__init__.py services/__init__.py \
    && pip install . && pip uninstall -y wsis && rm -rf wsis_core services build

COPY Makefile alembic.ini ./
COPY wsis_core ./wsis_core
COPY services ./services
COPY migrations ./migrations
RUN pip install --no-deps -e .

# Not root (Celery refuses to be comfortable as root); the volumes inherit these owners.
RUN useradd --create-home --uid 1000 wsis \
    && mkdir -p /data /artifacts /tmp/wsis-scratch && chown wsis:wsis /data /artifacts /tmp/wsis-scratch
USER wsis
ENV WSIS_DATA_ROOT=/data WSIS_ARTIFACT_ROOT=/artifacts
EXPOSE 8000

ENTRYPOINT ["wsis"]
CMD ["--help"]
