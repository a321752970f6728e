#!/usr/bin/env bash
# Run any rvtorch sub-command with the project venv (created on first use).
#   ./scripts/rvtorch.sh targets --json
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Sub-commands that start containers, QEMU or debootstrap need the host packages first.
case "${1:-}" in
  "" | -h | --help | --version | targets | check-wheel) ;;
  *) ensure_host_packages ;;
esac
ensure_venv
exec "$RVTORCH_VENV/bin/rvtorch" "$@"
