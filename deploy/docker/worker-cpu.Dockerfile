# syntax=docker/dockerfile:1
# A CPU worker: ONNX Runtime runs the backbone graph the model directory carries (`partsight train` exports it),
# scikit-learn the head; enrolments refit the head on the same features and plot the report (matplotlib).
# No torch, torchvision, onnx or EfficientNet packages: a worker on ONNX never imports them (tests/unit's
# test_deploy.py keeps worker-cpu-requirements.txt to pyproject's pins and the worker's modules free of them),
# and torch's CPU build alone would add ~700 MB (its CUDA build from PyPI several GB). Training, and a model
# directory without an ONNX graph (trained before graphs were exported: retrain it), need `pip install partsight`
# with torch on a training machine, not this image.
# Every stage is FROM the plant's own Debian base (python3 and python3-venv from Debian's packages; see
# deploy/README.md, "Images"): no image registry is needed. Build from the repository root:
#   podman build --format docker --build-arg BASE_IMAGE=partsight-base:bookworm \
#       -f deploy/docker/worker-cpu.Dockerfile -t partsight-worker .
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
COPY deploy/docker/worker-cpu-requirements.txt /tmp/
# the packages' own test suites (scipy, scikit-learn, matplotlib: ~100 MB) are never imported by a worker
RUN /opt/partsight/bin/pip install -r /tmp/worker-cpu-requirements.txt \
    && find /opt/partsight/lib -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +
COPY pyproject.toml README.md /src/
COPY broker/ /src/broker/
COPY worker/ /src/worker/
COPY models/ /src/models/
COPY partsight/ /src/partsight/
# partsight itself without its declared dependencies (torch and the training side): they are above
RUN /opt/partsight/bin/pip install --no-deps /src \
    && /opt/partsight/bin/pip uninstall -y pip setuptools

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 partsight \
    && useradd --system --uid 10001 --gid partsight --home-dir /var/lib/partsight --create-home --shell /usr/sbin/nologin partsight
COPY --from=build /opt/partsight /opt/partsight
ENV PATH=/opt/partsight/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PARTSIGHT_MODEL_DIR=/models \
    PARTSIGHT_DEVICE=cpu \
    PARTSIGHT_ENGINE=onnxruntime \
    PARTSIGHT_WORKER_METRICS_PORT=9302 \
    MPLBACKEND=Agg
USER 10001:10001
WORKDIR /var/lib/partsight
EXPOSE 9302
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9302/healthz', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["partsight"]
CMD ["worker"]
