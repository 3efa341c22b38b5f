#!/usr/bin/env bash
# Makes sure a Docker engine answers: uses the one running, else (as root) installs Debian's
# docker.io when dockerd is missing and starts dockerd in the background, on the unix socket
# DOCKER_HOST names or the default one. Host networking only (no bridge, no iptables rules):
# the compose tests put every container on the host network. Also installs debootstrap,
# which the offline base image needs.
#
#   scripts/docker_engine.sh            exit 0: an engine answers; else exit 1 and the reason
#                                       on the last line of stderr
#
# Writes the pid of a dockerd it started to $FLYWHEEL_DOCKERD_PIDFILE (default
# /run/flywheel-dockerd.pid), so that the caller can stop it; its log is beside it (.log).
set -euo pipefail

pidfile="${FLYWHEEL_DOCKERD_PIDFILE:-/run/flywheel-dockerd.pid}"
log="${pidfile%.pid}.log"
say() { printf 'docker-engine: %s\n' "$*"; }
fail() { printf 'docker-engine: %s\n' "$*" >&2; exit 1; }
answers() { docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && answers; then
  say "engine $(docker info --format '{{.ServerVersion}}') answers"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || fail "no Docker engine answers and only root can start one here"

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || fail "no apt-get to install ${missing[*]}"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    </dev/null >"$log.apt" 2>&1 || { tail -n 20 "$log.apt" >&2; fail "apt-get install ${missing[*]} failed"; }
fi
command -v dockerd >/dev/null 2>&1 || fail "dockerd is still missing after installing docker.io"

# Where the client looks: the default socket, or the unix socket DOCKER_HOST names.
listen=()
case "${DOCKER_HOST:-}" in unix://*) listen=(-H "$DOCKER_HOST") ;; esac
say "starting dockerd (log: $log)"
dockerd "${listen[@]}" --bridge=none --iptables=false --ip-masq=false >"$log" 2>&1 </dev/null &
echo $! >"$pidfile"
for _ in $(seq 1 60); do
  if answers; then
    say "engine $(docker info --format '{{.ServerVersion}}') answers" \
      "($(docker info --format '{{.Driver}}, cgroup v{{.CgroupVersion}}'))"
    exit 0
  fi
  kill -0 "$(cat "$pidfile")" 2>/dev/null || break
  sleep 1
done
tail -n 20 "$log" >&2
fail "dockerd did not answer within 60s: $(grep -m1 -iE 'level=(fatal|error)' "$log" | cut -c1-300)"
