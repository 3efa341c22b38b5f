#!/usr/bin/env bash
# Installs everything the project needs, and only what is missing; safe to run again.
#
#   system: redis-server, a JDK 17 (java) and Maven (mvn), through apt-get when absent
#   python: .venv with the package installed editable, extras $FLYWHEEL_EXTRAS (cpu,dev,boost,ray)
#   kafka:  the broker jars, fetched from Maven Central into the cache (flywheel infra fetch)
#
# Works unattended (CI=true, no stdin) as root on Debian/Ubuntu; elsewhere it names what
# to install. Set PYTHON to choose the interpreter of a new .venv (default python3, >= 3.11).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extras="${FLYWHEEL_EXTRAS:-cpu,dev,boost,ray}"
python="${PYTHON:-python3}"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
have() {
  if [ "$1" = java ] && [ -x "${JAVA_HOME:-/nonexistent}/bin/java" ]; then return 0; fi
  command -v "$1" >/dev/null 2>&1
}

# --- system packages --------------------------------------------------------------------
packages=()
have redis-server || packages+=(redis-server)
have java || packages+=(openjdk-17-jre-headless)
have mvn || packages+=(maven)
if ! have "$python"; then
  packages+=(python3 python3-venv)
elif [ ! -x .venv/bin/python ] && ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  packages+=(python3-venv)
fi

if [ "${#packages[@]}" -gt 0 ]; then
  say "installing ${packages[*]}"
  if ! have apt-get; then
    die "missing ${packages[*]} and no apt-get here: install them with your package manager"
  fi
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    have sudo && sudo -n true 2>/dev/null \
      || die "missing ${packages[*]}: run as root, or: sudo apt-get install ${packages[*]}"
    sudo=(sudo -n)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q </dev/null
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}" </dev/null
  for program in redis-server java mvn "$python"; do
    have "$program" || die "$program is still missing after apt-get install ${packages[*]}"
  done
else
  say "system packages present (java, mvn, redis-server)"
fi

# --- python environment -----------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$("$python" -V 2>&1) is too old: Python 3.11 or newer is needed (set PYTHON)"
  say "creating .venv with $("$python" -V 2>&1)"
  "$python" -m venv .venv
fi

# Reinstall only when pyproject.toml or the extras changed since the last install.
stamp=.venv/.flywheel-install
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || ! .venv/bin/python -c 'import flywheel.cli' 2>/dev/null; then
  say "installing the package with extras [$extras]"
  PIP_NO_INPUT=1 .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
  printf '%s\n' "$wanted" > "$stamp"
else
  say "python package up to date in .venv"
fi

# --- kafka broker jars ------------------------------------------------------------------
.venv/bin/flywheel infra fetch
say "done"
