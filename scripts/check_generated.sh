#!/usr/bin/env bash
# Fails when the committed generated code under services/ differs from what protos/ generate.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/flywheel/v1" "$tmp/flywheel/oip"
cp "$root/services/flywheel/v1/__init__.py" "$tmp/flywheel/v1/" 2>/dev/null || true
cp "$root/services/flywheel/oip/__init__.py" "$tmp/flywheel/oip/" 2>/dev/null || true
"$root/scripts/gen_protos.sh" "$tmp"
status=0
for pkg in flywheel/v1 flywheel/oip; do
  if ! diff -r -x __pycache__ "$tmp/$pkg" "$root/services/$pkg" >/dev/null; then
    echo "generated code in services/$pkg does not match protos/; run scripts/gen_protos.sh" >&2
    diff -r -x __pycache__ "$tmp/$pkg" "$root/services/$pkg" | head -20 >&2 || true
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "generated code matches protos/"
exit "$status"
