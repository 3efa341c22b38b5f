#!/usr/bin/env bash
# Regenerates the committed Python code from protos/ (message modules, gRPC stubs, type stubs).
# Usage: scripts/gen_protos.sh [OUT_DIR]   (default: services/)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/services}"
py="${PYTHON:-$root/.venv/bin/python}"
cd "$root"
mapfile -t files < <(find protos -name '*.proto' | sort)
"$py" -m grpc_tools.protoc -I protos --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "${files[@]}"
for pkg in flywheel/v1 flywheel/oip; do
  [ -f "$out/$pkg/__init__.py" ] || : > "$out/$pkg/__init__.py"
done
