# wsis image: the library, the `wsis` CLI and (once they land) the API and worker services.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# libgl/libglib for OpenCV's ximgproc (selective search), make for the two-command workflow
RUN apt-get update \
    && apt-get install -y --no-install-recommends make libglib2.0-0 libgl1 \
    && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md Makefile ./
COPY wsis_core ./wsis_core
COPY services ./services
RUN pip install -e .

ENTRYPOINT ["wsis"]
CMD ["--help"]
