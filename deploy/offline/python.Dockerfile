# The air-gapped stand-in for python:3.11-slim-bookworm: Debian bookworm's own Python 3.11 on
# the minimal Debian image that scripts/images.sh makes with debootstrap. Built from no
# context: `docker build --build-arg DEBIAN_IMAGE=... - < deploy/offline/python.Dockerfile`.
ARG DEBIAN_IMAGE=flywheel-base/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
CMD ["python3"]
