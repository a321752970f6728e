#!/usr/bin/env python3
"""The ATen op table of ``rvtorch bench ops``, run by the target Python (QEMU or a board).

    python3 ops_target.py count --out FILE [--n N] [--size S]   (under the counting QEMU)
    python3 ops_target.py time  --out FILE [--min-time T]       (natively, wall-clock)

``count``: for each op one warm-up call, then a marker system call, N calls, a marker (the
counting plugin snapshots its instruction counters at each marker: rvtorch.tcg_count); the
same at one element (the call's fixed cost); and empty regions (N calls of a no-op closure)
whose count is subtracted on the host. ``time``: the best time per call of several blocks of
calls. Both record ``torch.backends.cpu.get_cpu_capability()``; the host decides what runs with
``ATEN_CPU_CAPABILITY``. One thread (``torch.set_num_threads(1)``). Stdlib + torch only.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from collections.abc import Callable
from typing import Any

MARKER_NR = 0x5256  # rvtorch.tcg_count.MARKER_NR (this file runs without rvtorch)
SIZE = 16411        # prime: no multiple of any vector length, so every kernel runs a tail
ROWS = 11           # row-wise ops (softmax, layer_norm): ROWS x COLS, COLS prime
COLS = 1493


def op_table() -> list[tuple[str, str, str]]:
    """(name, dtype, kind): kind is ``elementwise``, ``reduction`` or ``row``."""
    ew = ["add", "sub", "mul", "div", "neg", "abs", "sqrt", "exp", "log", "sin", "cos", "tanh",
          "sigmoid", "relu", "gelu", "erf", "pow", "clamp", "lerp", "where", "gt", "maximum"]
    table = [(n, "float32", "elementwise") for n in ew]
    table += [(n, "float32", "reduction") for n in ("sum", "mean", "amax")]
    table += [(n, "float32", "row") for n in ("softmax", "log_softmax", "layer_norm")]
    table += [("add", "float64", "elementwise"), ("exp", "float64", "elementwise"),
              ("sum", "float64", "reduction")]
    return table


def make_call(torch: Any, name: str, dtype: str, kind: str, size: int) -> tuple[
        Callable[[], Any], list[int]]:
    """A zero-argument closure calling the op on fresh inputs of ``size`` elements (row ops:
    ROWS x COLS, or 1 x 1 for size 1), and the input shape."""
    import torch.nn.functional as F

    dt = getattr(torch, dtype)
    shape = [ROWS, COLS] if kind == "row" and size > 1 else ([1, 1] if kind == "row"
                                                                 else [size])
    g = torch.Generator().manual_seed(20261205)
    a = torch.randn(shape, generator=g, dtype=dt)
    b = torch.randn(shape, generator=g, dtype=dt)
    pos = a.abs() + 0.5  # sqrt, log, pow: in-domain inputs
    calls: dict[str, Callable[[], Any]] = {
        "add": lambda: torch.add(a, b), "sub": lambda: torch.sub(a, b),
        "mul": lambda: torch.mul(a, b), "div": lambda: torch.div(a, b),
        "neg": lambda: torch.neg(a), "abs": lambda: torch.abs(a),
        "sqrt": lambda: torch.sqrt(pos), "exp": lambda: torch.exp(a),
        "log": lambda: torch.log(pos), "sin": lambda: torch.sin(a),
        "cos": lambda: torch.cos(a), "tanh": lambda: torch.tanh(a),
        "sigmoid": lambda: torch.sigmoid(a), "relu": lambda: torch.relu(a),
        "gelu": lambda: F.gelu(a), "erf": lambda: torch.erf(a),
        "pow": lambda: torch.pow(pos, 1.7), "clamp": lambda: torch.clamp(a, -0.5, 0.5),
        "lerp": lambda: torch.lerp(a, b, 0.3), "where": lambda: torch.where(a > 0, a, b),
        "gt": lambda: torch.gt(a, b), "maximum": lambda: torch.maximum(a, b),
        "sum": lambda: torch.sum(a), "mean": lambda: torch.mean(a),
        "amax": lambda: torch.amax(a),
        "softmax": lambda: torch.softmax(a, dim=-1),
        "log_softmax": lambda: torch.log_softmax(a, dim=-1),
        "layer_norm": lambda: F.layer_norm(a, shape[-1:]),
    }
    return calls[name], shape


def op_key(name: str, dtype: str) -> str:
    return name if dtype == "float32" else f"{name}_{dtype}"


def _info(torch: Any) -> dict[str, Any]:
    return {"torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "python": sys.version.split()[0]}


def count(args: argparse.Namespace) -> dict[str, Any]:
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_long]

    def mark(tag: int) -> None:
        syscall(MARKER_NR, tag)  # ENOSYS under QEMU; the plugin has seen it

    import torch

    torch.set_num_threads(1)
    n = args.n
    tags = iter(range(1, 1 << 20))
    out: dict[str, Any] = {"mode": "count", "n": n, "size": args.size, "rows": ROWS,
                           "cols": COLS, "marker_nr": MARKER_NR, "ops": {}, "empty": []}

    def measure(fn: Callable[[], Any]) -> list[int]:
        fn()  # warm-up: first-call allocations and lazy initialisation stay outside
        t0, t1 = next(tags), next(tags)
        mark(t0)
        for _ in range(n):
            fn()
        mark(t1)
        return [t0, t1]

    def noop() -> None:
        return None

    # Empty regions (loop + closure call + marker): before, between and after the ops.
    out["empty"].append(measure(noop))
    for name, dtype, kind in op_table():
        fn, shape = make_call(torch, name, dtype, kind, args.size)
        small, small_shape = make_call(torch, name, dtype, kind, 1)
        out["ops"][op_key(name, dtype)] = {
            "op": name, "dtype": dtype, "kind": kind, "shape": shape, "tags": measure(fn),
            "small_shape": small_shape, "small_tags": measure(small)}
        if len(out["ops"]) == len(op_table()) // 2:
            out["empty"].append(measure(noop))
    out["empty"].append(measure(noop))
    out.update(_info(torch))
    return out


def timing(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    out: dict[str, Any] = {"mode": "time", "size": args.size, "rows": ROWS, "cols": COLS,
                           "min_time_s": args.min_time, "ops": {}}
    for name, dtype, kind in op_table():
        fn, shape = make_call(torch, name, dtype, kind, args.size)
        fn()
        n = 1
        while True:  # calls per block: a block of at least min_time / 5
            t = time.perf_counter()
            for _ in range(n):
                fn()
            dt = time.perf_counter() - t
            if dt >= args.min_time / 5 or n >= 1 << 22:
                break
            n *= 2
        best = dt / n
        for _ in range(4):
            t = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, (time.perf_counter() - t) / n)
        out["ops"][op_key(name, dtype)] = {"op": name, "dtype": dtype, "kind": kind,
                                           "shape": shape, "calls_per_block": n,
                                           "ns_per_call": round(best * 1e9, 1)}
    out.update(_info(torch))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("count", "time"))
    ap.add_argument("--out", required=True, help="JSON result file")
    ap.add_argument("--n", type=int, default=5, help="count: calls per region")
    ap.add_argument("--size", type=int, default=SIZE, help="elements per tensor")
    ap.add_argument("--min-time", type=float, default=0.5, help="time: seconds per op")
    args = ap.parse_args(argv)
    result = count(args) if args.mode == "count" else timing(args)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
