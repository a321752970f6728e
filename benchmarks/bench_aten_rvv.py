#!/usr/bin/env python3
"""ATen ops on riscv64, DEFAULT vs RVV capability: executed instructions per op under QEMU.

    python benchmarks/bench_aten_rvv.py --wheel dist/torch-...-riscv64.whl

Builds (once, cached) a plugin-enabled qemu-riscv64 from Debian's pinned qemu source and the
counting plugin src/rvtorch/tcg/insn_count.c, installs the wheel into a clean venv in the base
rootfs, and counts every op of src/rvtorch/ops_target.py on the rvv128 and rvv256 CPU models of
toolchains/targets.toml, once with ATEN_CPU_CAPABILITY=default and once with torch's own choice,
which must be RVV (else exit 5). Writes benchmarks/results/aten_rvv.json and prints a table.
Same as `rvtorch bench ops --wheel W`. `--expect-rvv no` makes a trial run of a DEFAULT-only
wheel (written to the cache, never to the results). A board times the same table:
`rvtorch bench ops --native`. Instruction counts are a proxy for speed, see docs/aten-rvv.md.
"""

import sys

from rvtorch.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "ops", *sys.argv[1:]]))
