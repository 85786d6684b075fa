# syntax=docker/dockerfile:1
# Prometheus from Debian's own package (no image registry needed), for compose's `monitoring` profile. compose
# mounts deploy/prometheus (the scrape config, rules) on /etc/prometheus and keeps the TSDB on a volume.
# Build from the repository root, FROM the plant's own Debian base:
#   podman build --format docker --build-arg BASE_IMAGE=partsight-base:bookworm \
#       -f deploy/docker/prometheus.Dockerfile -t partsight-prometheus .
ARG BASE_IMAGE=partsight-base:bookworm

FROM ${BASE_IMAGE}
# moment-timezone's data/ (212 MB of per-zone sources for JavaScript builds): the web UI loads its
# moment-timezone-with-data*.js files, not these
RUN echo 'path-exclude=/usr/share/javascript/moment-timezone/data/*' > /etc/dpkg/dpkg.cfg.d/partsight-slim \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
    && mkdir -p /prometheus \
    && chown prometheus:prometheus /prometheus
COPY deploy/prometheus/ /etc/prometheus/
USER prometheus
VOLUME ["/prometheus"]
WORKDIR /prometheus
EXPOSE 9090
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9090/-/healthy', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
