# drtrain: two images from one file.
#   target `api`    (the API, `drtrain migrate`, `drtrain keys`): no torch, so no CUDA. The API,
#                   the domain and the client are torch-free (docs/architecture.md).
#   target `worker` (training): everything, torch included. PyPI's Linux torch==2.13.0 is the
#                   CUDA build, so a plain Python base runs on GPU hosts with the NVIDIA
#                   container toolkit; build with TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#                   for a CPU-only worker (compose's `cpu` profile does).
FROM python:3.11.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first so code edits do not reinstall them: every dependency but torch.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('torch')))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && useradd --create-home --uid 10001 drtrain \
    && mkdir -p /data && chown drtrain:drtrain /data
ENV DRTRAIN_DATA_DIR=/data

FROM base AS worker
ARG TORCH_INDEX_URL=https://pypi.org/simple
RUN pip install --index-url "$TORCH_INDEX_URL" "$(grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')"
COPY . .
RUN pip install --no-deps .
USER drtrain
CMD ["drtrain", "worker"]

FROM base AS api
COPY . .
RUN pip install --no-deps . \
    && ! python -c "import torch" 2>/dev/null
USER drtrain
EXPOSE 8000
CMD ["drtrain", "api", "--host", "0.0.0.0", "--port", "8000"]
