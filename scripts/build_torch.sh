#!/usr/bin/env bash
# Cross-build a PyTorch wheel for a target (default riscv64) into dist/ and validate it under QEMU.
#   ./scripts/build_torch.sh --arch riscv64 [--torch-version 2.6.0] [--source auto|upstream|debian]
#                            [--jobs N] [--out DIR] [--openblas sysroot|recipe|deployed] [--dry-run]
# A thin wrapper: all decisions are made by `rvtorch build` (src/rvtorch/build.py).
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# --dry-run and --help only print: they install nothing.
case " $* " in
  *" --dry-run "* | *" --help "* | *" -h "*) ;;
  *) ensure_host_packages ;;
esac
ensure_venv
exec "$RVTORCH_VENV/bin/rvtorch" build "$@"
