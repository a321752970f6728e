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

# The host packages every entry point needs (one list; scripts/build_torch.sh, rvtorch.sh and
# test.sh all call ensure_host_packages): a container engine (buildah builds without a daemon;
# podman beside it), debootstrap for the offline base image and target root filesystems,
# qemu-user-static for running target programs, python3 + python3-venv for the project venv, the archive
# tools, each target's binutils (its strip, for wheel repair), one per triple in targets.toml, and
# the build tools of the QEMU 10 that runs a riscv64 wheel with ATen's RVV capability on the vector
# CPU models (rvtorch.tcg_count builds it from Debian's pinned qemu source: gcc, ninja, glib).
HOST_PACKAGES=(buildah podman debootstrap qemu-user-static python3 python3-venv xz-utils zstd git ca-certificates openssh-client e2fsprogs gcc ninja-build pkg-config libglib2.0-dev advancecomp)

host_packages() {
  printf '%s\n' "${HOST_PACKAGES[@]}"
  # Read with sed, not Python: on a fresh machine this runs before any Python is installed.
  sed -n 's/^triple *= *"\([^"]*\)".*/binutils-\1/p' "$RVTORCH_ROOT/toolchains/targets.toml"
}

# Install the missing host packages (as root), or name the exact command and exit 2 (not root).
# RVTORCH_SKIP_APT=1 skips the check (a machine set up by other means).
ensure_host_packages() {
  local p wanted=()
  while read -r p; do wanted+=("$p"); done < <(host_packages)
  ensure_apt_packages "${wanted[@]}"
}

# ensure_apt_packages PKG...: the same for any list (test.sh adds npm for its lint tier).
ensure_apt_packages() {
  [ -z "${RVTORCH_SKIP_APT:-}" ] || return 0
  command -v dpkg-query >/dev/null 2>&1 ||
    die "not a Debian/Ubuntu host: install $* yourself, then set RVTORCH_SKIP_APT=1"
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  [ "$(id -u)" -eq 0 ] || die "missing host packages; run: sudo apt-get install -y --no-install-recommends ${missing[*]}"
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed (is the Debian mirror reachable?)"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
}

rvtorch_cli() { "$RVTORCH_VENV/bin/rvtorch" "$@"; }
