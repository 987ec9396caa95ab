# syntax=docker/dockerfile:1
#
# AOS Gateway: one image for every gateway process (`aos worker`, `aos serve`, `aos dashboard`,
# `aos topics create`, `aos connect apply`, ...). Entrypoint `aos` (under tini), default command
# `worker`; runs as the unprivileged user aos (uid 10001). The package is installed with its
# vision and audio extras (open_clip, Whisper) and the weaviate extra (the shared index backend).
#
#   CPU  (default): docker build -t aos-gateway:0.1.0 .
#   CUDA:           docker build -t aos-gateway:0.1.0-cuda --build-arg VARIANT=cuda .
#
# Both variants start from the same pinned Python image. The CPU variant takes torch from
# PyTorch's CPU wheel index (no CUDA libraries: ~1 GB instead of ~6 GB). The CUDA variant takes
# torch from PyPI, whose Linux x86_64 wheels bundle the CUDA runtime, cuBLAS and cuDNN as
# nvidia-* wheels, so a CUDA container only needs the host's NVIDIA driver (NVIDIA Container
# Toolkit: `docker run --gpus all`, compose device reservations, Kubernetes `nvidia.com/gpu`).
# The text and image encoders then run on the GPU (`cuda if available`). Speech: CTranslate2
# (faster-whisper) needs the cuBLAS/cuDNN major versions it was built against, which need not be
# torch's; the GPU deployments here set AOS_AUDIO__DEVICE=cpu (Whisper tiny.en is cheap on CPU).
#
# Pinned: the base image (version tag), torch/torchvision (build args below); the package's
# own dependencies are resolved by pip from pyproject.toml at build time.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ARG VARIANT=cpu
ARG TORCH_VERSION=2.15.0
ARG TORCHVISION_VERSION=0.29.2
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler for the few dependencies that may build from source (e.g. openai-whisper is an sdist).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --upgrade pip

# torch first, from the index that fits the variant; the package install below then finds it satisfied.
RUN set -eux; \
    case "$VARIANT" in \
      cpu)  pip install --index-url "$TORCH_CPU_INDEX" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" ;; \
      cuda) pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" ;; \
      *)    echo "VARIANT must be cpu or cuda, not '$VARIANT'" >&2; exit 1 ;; \
    esac

WORKDIR /src
# Only what the wheel needs (see .dockerignore); README.md is the package's readme.
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY connectors ./connectors
COPY aos_gateway ./aos_gateway
RUN pip install '.[vision,audio,weaviate]' \
 && pip check

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VARIANT=cpu
LABEL org.opencontainers.image.title="aos-gateway" \
      org.opencontainers.image.description="AOS Gateway: routes tasks to AI agents over Kafka" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.aos.variant="${VARIANT}"

# ffmpeg decodes audio (WAV, FLAC, OGG, MP3) for Whisper; tini reaps children and forwards signals.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg tini \
 && rm -rf /var/lib/apt/lists/*

# The state folders exist in the image, owned by aos, so volumes mounted on them start writable.
RUN groupadd --system --gid 10001 aos \
 && useradd --system --uid 10001 --gid aos --home-dir /var/lib/aos --create-home --shell /usr/sbin/nologin aos \
 && mkdir -p /var/lib/aos/worker /var/lib/aos/experience /var/lib/aos/models /var/lib/aos/uploads \
 && chown -R aos:aos /var/lib/aos

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/var/lib/aos/.cache/huggingface \
    AOS_WORKER__DATA_DIR=/var/lib/aos/worker \
    AOS_EXPERIENCE__COLD_DIR=/var/lib/aos/experience \
    AOS_AUDIO__MODELS_DIR=/var/lib/aos/models

# Smoke test: the package imports and the CLI starts.
RUN python -c "import aos_gateway.settings" && aos --version

# State lives under /var/lib/aos: the Faust data dir, the Parquet cold store (experience/: a
# volume shared by the workers), converted models, and the ingress's large uploads (uploads/).
USER 10001:10001
WORKDIR /var/lib/aos

# worker: Prometheus metrics; serve: HTTP ingress; dashboard: web page
EXPOSE 9108 8080 8090

ENTRYPOINT ["tini", "--", "aos"]
CMD ["worker"]
