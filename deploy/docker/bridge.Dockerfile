# syntax=docker/dockerfile:1
# The bridge: MQTT in, Celery tasks on Redis out. No torch, torchvision, scikit-learn, Pillow or numpy:
# it installs only the bridge's own packages and runs on small gateways. The HTTP API (`partsight api`,
# FastAPI) runs from this image too: it is as light, with the few model-store modules it reads (pure file
# I/O; a test keeps this list to what api/ imports).
# Build from the repository root: docker build -f deploy/docker/bridge.Dockerfile -t partsight-bridge .

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/partsight
COPY deploy/docker/bridge-requirements.txt /tmp/
RUN /opt/partsight/bin/pip install -r /tmp/bridge-requirements.txt
COPY broker/ /opt/partsight/app/broker/
COPY partsight/ /opt/partsight/app/partsight/
COPY api/ /opt/partsight/app/api/
COPY models/__init__.py models/errors.py models/catalog.py models/enrolments.py models/review.py \
    models/review_s3.py models/review_stores.py models/versions.py /opt/partsight/app/models/

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 partsight \
    && useradd --system --uid 10001 --gid partsight --no-create-home --shell /usr/sbin/nologin partsight
COPY --from=build /opt/partsight /opt/partsight
ENV PATH=/opt/partsight/bin:$PATH \
    PYTHONPATH=/opt/partsight/app \
    PYTHONUNBUFFERED=1 \
    PARTSIGHT_BRIDGE_METRICS_PORT=9301
USER 10001:10001
EXPOSE 9301 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9301/healthz', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "partsight.cli"]
# `api` for the HTTP API on PARTSIGHT_API_PORT (8080); its deployments check its own /healthz
CMD ["bridge"]
