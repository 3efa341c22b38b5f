#!/usr/bin/env bash
# Builds the container images of compose.yaml, with or without an image registry.
#
#   scripts/images.sh              the mesh image; the offline base images where the standard
#                                  ones cannot be pulled (auto)
#   scripts/images.sh --offline    always the offline bases (an air-gapped build)
#   scripts/images.sh --online     always the standard bases (python, apache/kafka, redis)
#   scripts/images.sh --gpu        also the gpu target, where a CUDA base image can be had
#
# Offline, nothing comes from an image registry: a Debian bookworm base from debootstrap
# (Debian's mirror, as root), then on it Python 3.11, Kafka (the broker jars `flywheel infra
# fetch` took from Maven Central, on a JRE 17) and Redis from Debian's packages, and the mesh
# image from a wheelhouse of the project's pinned dependencies (deploy/wheelhouse, downloaded
# here from the package index for the image's Python and platform). Then
#   docker compose -f compose.yaml -f compose.offline.yaml up -d
# runs the mesh on them. Image names and versions come from .env. Each step prints its time;
# a step whose result is already there (the base, the wheelhouse) is skipped, and docker's
# layer cache makes a second build quick.
#
# Needs: docker (an engine that answers), the project's .venv (scripts/setup.sh) and, for the
# Debian base only, root and debootstrap. Every `docker build` runs on the host network.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

say() { printf 'images: %s\n' "$*"; }
die() { printf 'images: error: %s\n' "$*" >&2; exit 1; }
dotenv() { sed -n "s/^$1=//p" .env | tail -n 1; }
present() { docker image inspect "$1" >/dev/null 2>&1; }

mode=auto
gpu=no
for arg in "$@"; do
  case "$arg" in
    --offline) mode=offline ;;
    --online) mode=online ;;
    --gpu) gpu=yes ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $arg (see --help)" ;;
  esac
done

mesh_image="$(dotenv MESH_IMAGE):$(dotenv MESH_IMAGE_TAG)"
python_image="$(sed -n 's/^ARG PYTHON_IMAGE=//p' deploy/Dockerfile)"
cuda_image="$(sed -n 's/^ARG CUDA_IMAGE=//p' deploy/Dockerfile)"
debian_image="$(dotenv OFFLINE_DEBIAN_IMAGE)"
offline_python="$(dotenv OFFLINE_PYTHON_IMAGE)"
offline_kafka="$(dotenv OFFLINE_KAFKA_IMAGE)"
offline_redis="$(dotenv OFFLINE_REDIS_IMAGE)"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
wheelhouse=deploy/wheelhouse
python=.venv/bin/python
[ -x "$python" ] || die "no .venv here: run scripts/setup.sh first"
docker info >/dev/null 2>&1 || die "no Docker engine answers \`docker info\`: start dockerd first"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
total_start=$SECONDS
declare -a timings=()
step() {  # step NAME COMMAND...: runs it and records how long it took
  local name="$1" start=$SECONDS
  shift
  say "$name ..."
  "$@"
  timings+=("$(printf '%-34s %4ds' "$name" $((SECONDS - start)))")
}
build() {  # build TAG DOCKER-BUILD-ARGS...: on the host network, quiet unless it fails
  local tag="$1"
  shift
  if ! docker build --network host -t "$tag" "$@" >"$scratch/build.log" 2>&1; then
    tail -n 40 "$scratch/build.log" >&2
    die "building $tag failed (the last lines above)"
  fi
}

# -- which bases ------------------------------------------------------------------------------
if [ "$mode" = auto ]; then
  if present "$python_image"; then
    mode=online
  elif pulled="$(timeout 120 docker pull -q "$python_image" 2>&1)"; then
    mode=online
  else
    say "$python_image cannot be pulled (${pulled##*$'\n'}): building the offline bases"
    mode=offline
  fi
fi
say "bases: $mode"

# -- offline bases ----------------------------------------------------------------------------
debian_base() {
  command -v debootstrap >/dev/null 2>&1 \
    || die "debootstrap is missing: apt-get install debootstrap (or docker load $debian_image)"
  [ "$(id -u)" -eq 0 ] || die "debootstrap needs root (or docker load $debian_image)"
  local rootfs="$scratch/rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$scratch/debootstrap.log" 2>&1 \
    || { tail -n 30 "$scratch/debootstrap.log" >&2; die "debootstrap failed"; }
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
EOF
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$rootfs/etc/apt/apt.conf.d/90flywheel-no-recommends"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$debian_image" >/dev/null
  rm -rf "$rootfs"
}

kafka_image() {
  local context="$scratch/kafka" jars version
  jars="$(.venv/bin/flywheel infra fetch --json | "$python" -c 'import json,sys; print(json.load(sys.stdin)["jars_dir"])')"
  version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/kafka/pom.xml)"
  rm -rf "$context"
  cp -r deploy/offline/kafka "$context"
  mkdir "$context/libs"
  cp "$jars"/*.jar "$context/libs/"
  # The healthcheck's kafka-broker-api-versions.sh lives in kafka-tools, not in the broker.
  mvn -q -B -f deploy/kafka/pom.xml dependency:copy \
    "-Dartifact=org.apache.kafka:kafka-tools:$version" "-DoutputDirectory=$context/libs" \
    >"$scratch/mvn.log" 2>&1 \
    || { tail -n 30 "$scratch/mvn.log" >&2; die "fetching kafka-tools $version with Maven failed"; }
  build "$offline_kafka" --build-arg "DEBIAN_IMAGE=$debian_image" "$context"
}

# Wheels of the pinned dependencies (and the build backend), downloaded for a base image by
# that image's own pip and Python, so that environment markers and wheel tags are the image's:
# the container runs on the host network with the host's CA bundle, the way this machine
# reaches the package index. The image then installs from them with no index. A stamp skips
# the download while the requirements are the same.
fill_wheelhouse() {
  local image="$1" extras="$2" stamp wanted ca
  stamp="$wheelhouse/.stamp-$(printf '%s' "$image" | tr -c 'A-Za-z0-9.' '-')"
  "$python" deploy/requirements.py pyproject.toml "$extras" --build-backend >"$scratch/requirements"
  wanted="$(sha256sum <"$scratch/requirements" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    say "wheelhouse for $image [$extras] up to date"
    return
  fi
  cp "$scratch/requirements" "$wheelhouse/.requirements"
  ca="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
  [ -f "$ca" ] || die "no CA bundle at $ca for the download (set PIP_CERT)"
  # A base without Python and venv (the CUDA runtime) gets them from its own apt first.
  docker run --rm --network host -v "$root/$wheelhouse:/wheelhouse" -v "$ca:/run/host-ca.crt:ro" \
    -e PIP_CERT=/run/host-ca.crt -e PIP_INDEX_URL="${PIP_INDEX_URL:-https://pypi.org/simple}" \
    -e PIP_DISABLE_PIP_VERSION_CHECK=1 -e PIP_DEFAULT_TIMEOUT=120 -e OWNER="$(id -u):$(id -g)" \
    -e DEBIAN_FRONTEND=noninteractive "$image" sh -ec '
      python3 -c "import ensurepip, venv" 2>/dev/null || {
        apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-venv
      } >/dev/null
      python3 -m venv /tmp/pip
      /tmp/pip/bin/pip download -q --no-cache-dir --only-binary=:all: -d /wheelhouse \
        -r /wheelhouse/.requirements
      chown -R "$OWNER" /wheelhouse' \
    || die "downloading the wheels for $image failed"
  printf '%s\n' "$wanted" >"$stamp"
}

if [ "$mode" = offline ]; then
  if present "$debian_image"; then
    say "$debian_image present"
  else
    step "debian base (debootstrap)" debian_base
  fi
  step "python base" build "$offline_python" --build-arg "DEBIAN_IMAGE=$debian_image" - \
    <deploy/offline/python.Dockerfile
  step "redis" build "$offline_redis" --build-arg "DEBIAN_IMAGE=$debian_image" - \
    <deploy/offline/redis.Dockerfile
  step "kafka" kafka_image
  step "wheelhouse" fill_wheelhouse "$offline_python" cpu,boost
  step "mesh image (cpu)" build "$mesh_image" -f deploy/Dockerfile --target cpu \
    --build-arg "PYTHON_IMAGE=$offline_python" --build-arg PIP_NO_INDEX=1 .
else
  step "mesh image (cpu)" build "$mesh_image" -f deploy/Dockerfile --target cpu \
    --build-arg "PYTHON_IMAGE=$python_image" .
fi

# -- gpu ---------------------------------------------------------------------------------------
if [ "$gpu" = yes ]; then
  if ! present "$cuda_image" && ! pulled="$(timeout 300 docker pull -q "$cuda_image" 2>&1)"; then
    say "gpu: not built: the CUDA base $cuda_image is not here and cannot be pulled" \
      "(${pulled##*$'\n'}); \`docker load\` it, then run this again with --gpu"
  else
    gpu_args=(--build-arg "CUDA_IMAGE=$cuda_image")
    if [ "$mode" = offline ]; then
      # The CUDA image (Ubuntu 24.04) has its own Python: its wheels join the same wheelhouse.
      step "wheelhouse (gpu)" fill_wheelhouse "$cuda_image" gpu,boost
      gpu_args+=(--build-arg "PYTHON_IMAGE=$offline_python" --build-arg PIP_NO_INDEX=1)
    fi
    step "mesh image (gpu)" build "$mesh_image-gpu" -f deploy/Dockerfile --target gpu \
      "${gpu_args[@]}" .
  fi
fi

say "timings:"
printf '  %s\n' "${timings[@]}"
printf '  %-34s %4ds\n' "total" $((SECONDS - total_start))
docker image ls --format '  {{.Repository}}:{{.Tag}} {{.Size}}' \
  | grep -F -e "$mesh_image" -e "$debian_image" -e "$offline_python" -e "$offline_kafka" \
    -e "$offline_redis" || true
