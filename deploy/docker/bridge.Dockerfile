# syntax=docker/dockerfile:1
# The bridge: MQTT in, Celery tasks on Redis out. No torch, torchvision, scikit-learn, Pillow or numpy:
# it installs only the bridge's own packages and runs on small gateways. The HTTP API (`partsight api`,
# FastAPI) runs from this image too: it is as light, with the model store's light modules it reads
# (models/store/: plain files and JSON; a test keeps them to what api/ imports, and free of heavy imports).
# Every stage is FROM the plant's own Debian base (python3 and python3-venv from Debian's packages; see
# deploy/README.md, "Images"): no image registry is needed. Build from the repository root:
#   podman build --format docker --build-arg BASE_IMAGE=partsight-base:bookworm \
#       -f deploy/docker/bridge.Dockerfile -t partsight-bridge .
ARG BASE_IMAGE=partsight-base:bookworm

FROM ${BASE_IMAGE} AS build
# PIP_CERT: pip trusts the base's CA bundle (a plant's proxy CA, when its base carries one), not only its own.
# PIP_INDEX_URL: a plant's package mirror, as a build argument (default PyPI).
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_INDEX_URL=${PIP_INDEX_URL}
RUN python3 -m venv /opt/partsight
COPY deploy/docker/bridge-requirements.txt /tmp/
RUN /opt/partsight/bin/pip install -r /tmp/bridge-requirements.txt \
    && /opt/partsight/bin/pip uninstall -y pip setuptools
COPY broker/ /opt/partsight/app/broker/
COPY partsight/ /opt/partsight/app/partsight/
COPY api/ /opt/partsight/app/api/
COPY models/__init__.py models/errors.py /opt/partsight/app/models/
COPY models/store/ /opt/partsight/app/models/store/
# compiled here: the image's user cannot write __pycache__ next to the sources
RUN /opt/partsight/bin/python -m compileall -q /opt/partsight/app

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 partsight \
    && useradd --system --uid 10001 --gid partsight --no-create-home --shell /usr/sbin/nologin partsight
COPY --from=build /opt/partsight /opt/partsight
ENV PATH=/opt/partsight/bin:$PATH \
    PYTHONPATH=/opt/partsight/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PARTSIGHT_BRIDGE_METRICS_PORT=9301
USER 10001:10001
EXPOSE 9301 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9301/healthz', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "partsight.cli"]
# `api` for the HTTP API on PARTSIGHT_API_PORT (8080); its deployments check its own /healthz
CMD ["bridge"]
