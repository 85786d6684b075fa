# syntax=docker/dockerfile:1
# Mosquitto from Debian's own package (no image registry needed): the broker compose names as `mosquitto`.
# It starts as root, reads /mosquitto/config (the config, and the password file and ACL compose mounts as
# secrets) and drops to Debian's `mosquitto` user itself (mosquitto.conf's `user`, default mosquitto), as the
# eclipse-mosquitto image does. Build from the repository root, FROM the plant's own Debian base:
#   podman build --build-arg BASE_IMAGE=partsight-base:bookworm -f deploy/docker/mosquitto.Dockerfile -t partsight-mosquitto .
ARG BASE_IMAGE=partsight-base:bookworm

FROM ${BASE_IMAGE}
# netcat-openbsd: compose's healthcheck (nc -z 127.0.0.1 1883)
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto netcat-openbsd \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
    && mkdir -p /mosquitto/config /mosquitto/data \
    && chown mosquitto:mosquitto /mosquitto/data
COPY deploy/mosquitto/mosquitto.conf /mosquitto/config/mosquitto.conf
VOLUME ["/mosquitto/data"]
EXPOSE 1883
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD ["nc", "-z", "127.0.0.1", "1883"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/sbin/mosquitto"]
CMD ["-c", "/mosquitto/config/mosquitto.conf"]
