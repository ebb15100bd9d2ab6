#!/usr/bin/env bash
# Regenerate the lock files from pyproject.toml. Run after changing a dependency.
#   requirements.lock      runtime set (images install this)
#   requirements-dev.lock  runtime + test/benchmark extras (scripts/test.sh installs this)
set -euo pipefail
usage() { echo "usage: $0   (regenerates requirements.lock and requirements-dev.lock with uv)"; }
[[ "${1:-}" =~ ^(-h|--help)$ ]] && { usage; exit 0; }
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
command -v uv >/dev/null || python3 -m pip install -q "uv==${UV_VERSION}"
uv pip compile pyproject.toml --python-version 3.11 --generate-hashes -o requirements.lock --no-header
uv pip compile pyproject.toml --extra test --python-version 3.11 --generate-hashes -o requirements-dev.lock --no-header
echo "lock files updated"
