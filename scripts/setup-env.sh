#!/usr/bin/env bash
# Create or update ./.venv from requirements-dev.lock (or requirements.lock with --runtime)
# and install this project into it (editable). Idempotent: a venv whose lock is unchanged is
# reused in about a second.
set -euo pipefail
usage() {
  cat <<USAGE
usage: $0 [--runtime]
  Creates .venv with every pinned dependency from the lock file (progress is shown).
  --runtime   install requirements.lock only (no test tools)
USAGE
}
LOCK=requirements-dev.lock
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --runtime) LOCK=requirements.lock ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="${CHUTES_LB_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
UV_VERSION=0.13.9

stamp="$VENV/.lock-stamp"
want="$(sha256sum "$LOCK" pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "[setup-env] $VENV is up to date with $LOCK"
  exit 0
fi

"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "[setup-env] Python >= 3.11 is required ($PY is $("$PY" -V 2>&1))" >&2; exit 1; }
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup-env] creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [[ ! -x "$VENV/bin/uv" ]]; then
  echo "[setup-env] installing uv $UV_VERSION (fast, hash-checked installs from the lock)"
  timeout 300 "$VENV/bin/python" -m pip install --disable-pip-version-check -q "uv==$UV_VERSION"
fi
echo "[setup-env] installing $(grep -c '==' "$LOCK") pinned packages from $LOCK (first run: ~1 min)"
timeout 900 "$VENV/bin/uv" pip sync --python "$VENV/bin/python" --require-hashes "$LOCK"
timeout 300 "$VENV/bin/uv" pip install --python "$VENV/bin/python" --no-deps -q -e .
echo "$want" > "$stamp"
echo "[setup-env] ready: $VENV"
