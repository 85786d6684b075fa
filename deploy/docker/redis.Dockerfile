# syntax=docker/dockerfile:1
# Redis from Debian's own package (no image registry needed): the Celery queue compose names as `redis`.
# The container starts as root only to read its password from /run/secrets/redis_password (a file that
# only its owner reads), then runs redis-server as Debian's `redis` user (setpriv, util-linux), as the
# official image's entrypoint does with gosu. Build from the repository root, FROM the plant's own base:
#   podman build --build-arg BASE_IMAGE=partsight-base:bookworm -f deploy/docker/redis.Dockerfile -t partsight-redis .
ARG BASE_IMAGE=partsight-base:bookworm

FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log /etc/redis/redis.conf \
    && mkdir -p /data /usr/local/etc/redis \
    && chown redis:redis /data
COPY deploy/redis/redis.conf /usr/local/etc/redis/redis.conf
COPY deploy/docker/redis-entrypoint.sh /usr/local/bin/redis-entrypoint
VOLUME ["/data"]
WORKDIR /data
EXPOSE 6379
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD ["sh", "-c", "REDISCLI_AUTH=\"$(cat /run/secrets/redis_password 2>/dev/null)\" redis-cli ping | grep -q PONG"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/redis-entrypoint"]
CMD ["/usr/local/etc/redis/redis.conf"]
