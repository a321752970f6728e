#!/usr/bin/env python3
"""GEMM timing on the target: python3 + ctypes only, so it runs in a bare rootfs or on a board.

    python3 gemm_target.py --lib /path/libopenblas.so.0 --sizes 64,128,256,512 --dir DIR

Inputs come from DIR (``{s,d}_a_N.bin`` and ``{s,d}_b_N.bin``, row-major, written by the host
runner with numpy) or, when absent, from a fixed pseudo-random sequence made here. For each
type and size it runs ``cblas_{s,d}gemm`` (C = A @ B) once to warm up, then repeats until
``--min-time`` seconds have passed, writes C to ``{s,d}_c_N.bin`` and prints one JSON object:
GFLOPS per type and size, the seconds measured, and the kernel set the library reports
(``openblas_get_corename``; reference BLAS has none). One thread unless the caller's
environment says otherwise (OPENBLAS_NUM_THREADS).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import sys
import time
from typing import Any

ROW_MAJOR, NO_TRANS = 101, 111
TYPES = {"s": (ctypes.c_float, "f"), "d": (ctypes.c_double, "d")}


def load(lib_path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(lib_path, mode=ctypes.RTLD_LOCAL)
    for prefix, (ctype, _) in TYPES.items():
        fn = getattr(lib, f"cblas_{prefix}gemm")
        p = ctypes.POINTER(ctype)
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctype, p, ctypes.c_int, p, ctypes.c_int, ctype, p,
                       ctypes.c_int]
        fn.restype = None
    return lib


def corename(lib: ctypes.CDLL) -> str | None:
    try:
        fn = lib.openblas_get_corename
    except AttributeError:
        return None
    fn.restype = ctypes.c_char_p
    name = fn()
    return name.decode() if name else None


def generated(n: int, ctype: Any, seed: int) -> Any:
    """Values in [-0.5, 0.5) from a 32-bit LCG (used only when the host gave no inputs)."""
    arr = (ctype * (n * n))()
    x = seed
    for i in range(n * n):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        arr[i] = ((x >> 8) & 0xFFFF) / 65536.0 - 0.5
    return arr


def matrix(directory: str | None, name: str, n: int, ctype: Any, seed: int) -> Any:
    if directory:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            with open(path, "rb") as fh:
                data = fh.read()
            if len(data) != n * n * ctypes.sizeof(ctype):
                raise SystemExit(f"{path}: {len(data)} bytes, expected {n}x{n} elements")
            return (ctype * (n * n)).from_buffer_copy(data)
    return generated(n, ctype, seed)


def bench(lib: ctypes.CDLL, prefix: str, n: int, directory: str | None, min_time: float
          ) -> dict[str, float]:
    ctype: Any = TYPES[prefix][0]
    a = matrix(directory, f"{prefix}_a_{n}.bin", n, ctype, 1)
    b = matrix(directory, f"{prefix}_b_{n}.bin", n, ctype, 2)
    c = (ctype * (n * n))()
    gemm = getattr(lib, f"cblas_{prefix}gemm")

    def once() -> None:
        gemm(ROW_MAJOR, NO_TRANS, NO_TRANS, n, n, n, 1.0, a, n, b, n, 0.0, c, n)

    once()  # warm-up: first-touch pages, thread pool, kernel dispatch
    reps, start = 0, time.perf_counter()
    while True:
        once()
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            break
    if directory:
        with open(os.path.join(directory, f"{prefix}_c_{n}.bin"), "wb") as fh:
            fh.write(bytes(c))
    return {"gflops": 2.0 * n * n * n * reps / elapsed / 1e9, "seconds": elapsed, "reps": reps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", required=True, help="BLAS shared library with the CBLAS interface")
    ap.add_argument("--sizes", default="64,128,256,512")
    ap.add_argument("--types", default="s,d", help="s (sgemm), d (dgemm) or both")
    ap.add_argument("--dir", help="input/output directory for the matrices")
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement")
    args = ap.parse_args(argv)
    lib = load(args.lib)
    out: dict[str, object] = {
        "lib": args.lib,
        "corename": corename(lib),
        "machine": platform.machine(),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "results": {},
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    for prefix in args.types.split(","):
        if prefix not in TYPES:
            raise SystemExit(f"unknown type {prefix!r} (s or d)")
        results[f"{prefix}gemm"] = {
            str(n): bench(lib, prefix, int(n), args.dir, args.min_time)
            for n in args.sizes.split(",")
        }
    out["results"] = results
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
