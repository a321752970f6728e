# shellcheck shell=bash
# Shared helpers for rvtorch's shell scripts: strict mode, paths, the project venv.
set -Eeuo pipefail

RVTORCH_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RVTORCH_ROOT="$(cd "$RVTORCH_SCRIPTS/.." && pwd)"
RVTORCH_VENV="${RVTORCH_VENV:-$RVTORCH_ROOT/.venv}"
export RVTORCH_ROOT

log() { printf '[rvtorch] %s\n' "$*" >&2; }
die() { printf 'rvtorch: error: %s\n' "$*" >&2; exit "${2:-2}"; }

# Pick a Python >= 3.11 for the host side.
host_python() {
  local py
  for py in "${RVTORCH_PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$py" ] || continue
    if command -v "$py" >/dev/null 2>&1 &&
      "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      command -v "$py"
      return 0
    fi
  done
  die "no Python >= 3.11 found (install python3 >= 3.11 or set RVTORCH_PYTHON)"
}

# Create the project venv (once) and install rvtorch into it; extras as "$1" (e.g. dev).
ensure_venv() {
  local extras="${1:-}" spec="$RVTORCH_ROOT" stamp
  [ -n "$extras" ] && spec="${RVTORCH_ROOT}[${extras}]"
  stamp="$RVTORCH_VENV/.rvtorch-installed-${extras:-base}"
  if [ ! -x "$RVTORCH_VENV/bin/python" ]; then
    log "creating venv $RVTORCH_VENV"
    "$(host_python)" -m venv "$RVTORCH_VENV"
  fi
  if [ ! -f "$stamp" ] || [ "$RVTORCH_ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$RVTORCH_VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$RVTORCH_VENV/bin/python" -m pip install -q -e "$spec"
    touch "$stamp"
  fi
}

rvtorch_cli() { "$RVTORCH_VENV/bin/rvtorch" "$@"; }
