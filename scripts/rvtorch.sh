#!/usr/bin/env bash
# Run any rvtorch sub-command with the project venv (created on first use).
#   ./scripts/rvtorch.sh targets --json
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_venv
exec "$RVTORCH_VENV/bin/rvtorch" "$@"
