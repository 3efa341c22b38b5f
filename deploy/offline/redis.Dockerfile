# The air-gapped stand-in for the redis image: Debian bookworm's redis-server, run as the
# redis user with its data in /data, the way the official image is used (the command names
# the options: compose.yaml passes `redis-server --appendonly yes ...`). Like the official
# image, it turns protected mode off, so that other containers reach it; options the command
# gives come later on the line and win.
ARG DEBIAN_IMAGE=flywheel-base/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
VOLUME /data
EXPOSE 6379
ENTRYPOINT ["/bin/sh", "-c", "if [ \"$1\" = redis-server ]; then shift; set -- redis-server --protected-mode no \"$@\"; fi; exec \"$@\"", "redis"]
CMD ["redis-server"]
