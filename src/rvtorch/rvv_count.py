#!/usr/bin/env python3
"""Count RISC-V vector (RVV) instructions in shared libraries, per kernel set.

    python3 rvv_count.py [--objdump riscv64-linux-gnu-objdump] LIB...

Prints JSON: per library the number of instructions and of vector ones (every RVV mnemonic starts
with ``v``: vsetvli, vle32.v, vfmacc.vf, ...; no scalar one does), split by the kernel-set
suffix OpenBLAS's DYNAMIC_ARCH gives each kernel's symbols (``sgemm_kernel_RISCV64_ZVL128B``).
Functions without such a suffix count as ``common``; a stripped library (Debian's) has no
function names, so only its totals mean something. Stdlib only: runs in the toolchain image or
on a board with binutils.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

FUNC = re.compile(r"^[0-9a-f]+ <(?P<name>[^>]+)>:$")
INSN = re.compile(r"^\s*[0-9a-f]+:\s+(?P<mnemonic>[a-z][a-z0-9_.]*)")
KERNEL_SET = re.compile(r"_(RISCV64_[A-Z0-9]+|C910V|x280|ARMV8[A-Z0-9]*|CORTEX[A-Z0-9]+|"
                        r"NEOVERSE[A-Z0-9]+)$")


def count(lib: str, objdump: str) -> dict[str, object]:
    proc = subprocess.Popen([objdump, "-d", "--no-show-raw-insn", lib], stdout=subprocess.PIPE,
                            text=True, errors="replace")
    assert proc.stdout is not None
    by_set: dict[str, dict[str, int]] = {}
    current = "common"
    total = vector = 0
    for line in proc.stdout:
        m = FUNC.match(line)
        if m:
            k = KERNEL_SET.search(m.group("name"))
            current = k.group(1) if k else "common"
            continue
        m = INSN.match(line)
        if not m:
            continue
        is_vector = m.group("mnemonic").startswith("v")
        total += 1
        vector += is_vector
        entry = by_set.setdefault(current, {"instructions": 0, "vector": 0})
        entry["instructions"] += 1
        entry["vector"] += is_vector
    if proc.wait() != 0:
        raise SystemExit(f"{objdump} failed on {lib} (exit {proc.returncode})")
    return {"instructions": total, "vector": vector, "by_kernel_set": by_set}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objdump", default="objdump")
    ap.add_argument("libs", nargs="+")
    args = ap.parse_args(argv)
    json.dump({lib: count(lib, args.objdump) for lib in args.libs}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
