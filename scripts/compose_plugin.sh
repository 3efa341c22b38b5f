#!/usr/bin/env bash
# Makes `docker compose` work: when the Compose CLI plugin is missing, builds it from source
# with Go (deploy/compose-plugin pins the version and every module's checksum; the modules
# come from the Go module proxy) and installs it as $DOCKER_CONFIG/cli-plugins/docker-compose
# (default ~/.docker). About a minute of compiling on two cores. Prints the plugin's version.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf 'compose-plugin: %s\n' "$*"; }
die() { printf 'compose-plugin: error: %s\n' "$*" >&2; exit 1; }

if version="$(docker compose version --short 2>/dev/null)"; then
  say "docker compose $version present"
  exit 0
fi

# The Go of this machine, where the module asks for: a `go` on PATH, else /usr/local/go.
go=go
command -v go >/dev/null 2>&1 || go=/usr/local/go/bin/go
[ -x "$(command -v "$go")" ] || die "Go is missing: install Go (go.dev/dl) to build the Compose plugin"
want="$(sed -n 's/^go //p' "$root/deploy/compose-plugin/go.mod")"
have="$("$go" env GOVERSION)"
# Older toolchains fetch the one the module names (GOTOOLCHAIN=auto), from the module proxy.
say "building with $have (the module asks for go $want)"

compose="$(sed -n 's:^[[:space:]]*github.com/docker/compose/v5 \(v[^ ]*\).*:\1:p' "$root/deploy/compose-plugin/go.mod")"
plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
mkdir -p "$plugins"
start=$SECONDS
(
  cd "$root/deploy/compose-plugin"
  CGO_ENABLED=0 "$go" build -trimpath -o "$plugins/docker-compose.partial" \
    -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$compose" \
    github.com/docker/compose/v5/cmd
)
mv "$plugins/docker-compose.partial" "$plugins/docker-compose"
say "built docker compose $compose into $plugins in $((SECONDS - start))s"
docker compose version
