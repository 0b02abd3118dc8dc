# drtrain: one image for the API, the workers and the one-shot migration.
# CUDA comes from the torch wheel (PyPI's Linux torch==2.13.0 is the CUDA build), so a plain
# Python base image runs on GPU hosts with the NVIDIA container toolkit.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first so code edits do not reinstall torch.
COPY pyproject.toml README.md ./
COPY dr_core/__init__.py dr_core/__init__.py
COPY api/__init__.py api/__init__.py
COPY worker/__init__.py worker/__init__.py
COPY drtrain_cli/__init__.py drtrain_cli/__init__.py
COPY drtrain_client/__init__.py drtrain_client/__init__.py
COPY migrations/__init__.py* migrations/
RUN pip install . && pip uninstall -y drtrain

COPY . .
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 drtrain \
    && mkdir -p /data && chown drtrain:drtrain /data

USER drtrain
ENV DRTRAIN_DATA_DIR=/data
EXPOSE 8000
CMD ["drtrain", "api", "--host", "0.0.0.0", "--port", "8000"]
