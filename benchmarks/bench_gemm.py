#!/usr/bin/env python3
"""GEMM benchmark under QEMU: our OpenBLAS (GENERIC / ZVL128B / ZVL256B picked per CPU model)
against Debian's reference BLAS and Debian's OpenBLAS, sgemm + dgemm 64..512, one thread.

Writes benchmarks/results/gemm.json. Same as `rvtorch bench gemm`; on a board use
`rvtorch bench gemm --native --lib NAME=PATH ...`. Needs `rvtorch deps build --arch riscv64`.
"""

import sys

from rvtorch.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "gemm", *sys.argv[1:]]))
