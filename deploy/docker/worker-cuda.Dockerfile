# syntax=docker/dockerfile:1
# A GPU worker: torch on CUDA in half precision with nvJPEG batch decoding. PyPI's torch and torchvision
# wheels carry the CUDA libraries; the host needs only the NVIDIA driver and container toolkit.
# Every stage is FROM the plant's own Debian base (python3 and python3-venv from Debian's packages; see
# deploy/README.md, "Images"). Build from the repository root (several GB: PyPI's torch with its CUDA libraries):
#   podman build --format docker --build-arg BASE_IMAGE=partsight-base:bookworm \
#       -f deploy/docker/worker-cuda.Dockerfile -t partsight-worker-cuda .
ARG BASE_IMAGE=partsight-base:bookworm

FROM ${BASE_IMAGE} AS build
# PIP_CERT: pip trusts the base's CA bundle (a plant's proxy CA, when its base carries one), not only its own.
# PIP_INDEX_URL: a plant's package mirror, as a build argument (default PyPI).
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_INDEX_URL=${PIP_INDEX_URL}
# hnswlib (the gallery's photo index) is built from source: a C++ compiler in this stage only, from the base's
# own Debian mirror; the final stage copies the venv and stays without it. HNSWLIB_NO_NATIVE: compiled for any
# x86-64 (or arm64) host, not for this build machine's CPU alone (-march=native would stop a worker on an older CPU
# with an illegal instruction)
ENV HNSWLIB_NO_NATIVE=1
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ python3-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/partsight
COPY pyproject.toml README.md /src/
COPY broker/ /src/broker/
COPY worker/ /src/worker/
COPY models/ /src/models/
COPY partsight/ /src/partsight/
RUN /opt/partsight/bin/pip install /src

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 partsight \
    && useradd --system --uid 10001 --gid partsight --home-dir /var/lib/partsight --create-home --shell /usr/sbin/nologin partsight
COPY --from=build /opt/partsight /opt/partsight
ENV PATH=/opt/partsight/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PARTSIGHT_MODEL_DIR=/models \
    PARTSIGHT_DEVICE=cuda \
    PARTSIGHT_WORKER_METRICS_PORT=9302 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /var/lib/partsight
EXPOSE 9302
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9302/healthz', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["partsight"]
CMD ["worker"]
