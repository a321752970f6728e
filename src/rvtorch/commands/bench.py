"""``rvtorch bench gemm``: sgemm/dgemm GFLOPS of our OpenBLAS against Debian's BLAS builds.

  rvtorch bench gemm [--arch riscv64]            under QEMU, every CPU model of targets.toml
  rvtorch bench gemm --native --lib NAME=PATH... on a board (no QEMU), same target script
  rvtorch bench ops --wheel W                   ATen ops, DEFAULT vs RVV: executed instructions
                                                under the counting QEMU (rvtorch.ops_bench)
  rvtorch bench ops --native                    the same op table timed on a board
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import gemm_bench, ops_bench, ops_target
from ..cli import FILE, OUTPUT_FILE
from ..errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="benchmarks (GEMM: OpenBLAS kernels vs reference BLAS)")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    bsub.required = True
    g = bsub.add_parser("gemm", help="sgemm/dgemm GFLOPS, results checked against numpy")
    g.add_argument("--arch", default="riscv64", help="target arch under QEMU (default riscv64)")
    g.add_argument("--sizes", default=",".join(map(str, gemm_bench.SIZES)),
                   help="comma-separated square sizes")
    g.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    g.add_argument("--ours", type=FILE, metavar="LIB",
                   help="our libopenblas.so.0 (default: what `rvtorch deps build` deployed)")
    g.add_argument("--no-rvv-count", action="store_true",
                   help="skip counting vector instructions (needs the toolchain image)")
    g.add_argument("--native", action="store_true",
                   help="run on this machine (a board) instead of under QEMU")
    g.add_argument("--lib", action="append", default=[], metavar="NAME=PATH",
                   help="with --native: a BLAS library to measure (repeatable)")
    g.add_argument("--objdump", help="with --native: objdump to count RVV instructions with")
    g.add_argument("--output", type=OUTPUT_FILE, help="results file (default: "
                   "benchmarks/results/gemm.json in a checkout, else the cache)")
    g.set_defaults(func=run_gemm)
    o = bsub.add_parser("ops", help="ATen ops, DEFAULT vs RVV capability: executed instructions "
                        "under QEMU, or wall-clock time on a board (--native)")
    o.add_argument("--native", action="store_true",
                   help="time the op table with this machine's python (a board), no QEMU")
    o.add_argument("--python", default=None,
                   help="with --native: the Python whose torch to time (default: this one)")
    o.add_argument("--min-time", type=float, default=0.5,
                   help="with --native: seconds of calls per op and block")
    o.add_argument("--wheel", type=FILE, help="under QEMU: the riscv64 torch wheel to count")
    o.add_argument("--cpu", action="append", default=[], metavar="MODEL",
                   help="under QEMU: vector CPU model of targets.toml (repeatable; default "
                   + " and ".join(ops_bench.DEFAULT_MODELS) + ")")
    o.add_argument("--expect-rvv", choices=ops_bench.EXPECT, default="yes",
                   help="under QEMU: must torch choose RVV on the vector models? 'no' is a trial "
                   "run of a DEFAULT-only wheel (written outside benchmarks/results)")
    o.add_argument("--n", type=int, default=5, help="under QEMU: calls per counted region")
    o.add_argument("--size", type=int, default=ops_target.SIZE, help="elements per tensor")
    o.add_argument("--json", "--output", dest="output", type=OUTPUT_FILE,
                   help="results file (default: under QEMU benchmarks/results/aten_rvv.json, "
                   "or the cache for --expect-rvv no; --native prints only)")
    o.set_defaults(func=run_ops)


def run_gemm(args: argparse.Namespace) -> int:
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError as exc:
        raise UsageError(f"--sizes {args.sizes!r}: comma-separated integers expected") from exc
    if args.native:
        libs = {}
        for item in args.lib:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise UsageError(f"--lib {item!r}: expected NAME=PATH")
            if not Path(path).exists():
                raise UsageError(f"--lib {name}: {path} does not exist")
            libs[name] = Path(path)
        if not libs:
            raise UsageError("--native needs at least one --lib NAME=PATH",
                             hint="e.g. --lib ours=.../libopenblas.so.0 "
                             "--lib debian-reference=/usr/lib/riscv64-linux-gnu/blas/libblas.so.3")
        report = gemm_bench.run_native(libs=libs, sizes=sizes, min_time=args.min_time,
                                       objdump=args.objdump)
    else:
        report = gemm_bench.run_emulated(args.arch, sizes=sizes, min_time=args.min_time,
                                         ours=args.ours, count_rvv=not args.no_rvv_count)
    out = args.output
    if out is None:
        checkout = gemm_bench.results_path()
        out = checkout if checkout.parent.is_dir() else gemm_bench.default_cache_results()
    gemm_bench.write_report(report, out)
    print(json.dumps(report["summary"], indent=1))
    print(f"results: {out}")
    gemm_bench.check(report)
    return 0


def run_ops(args: argparse.Namespace) -> int:
    if args.native:
        if args.wheel or args.cpu:
            raise UsageError("--native times this machine's torch: --wheel/--cpu are for QEMU")
        report = ops_bench.run_native(min_time=args.min_time, size=args.size,
                                      python=args.python or sys.executable)
        print(ops_bench.native_table(report))
        if args.output:
            ops_bench.write_report(report, args.output)
            print(f"results: {args.output}")
        return 0
    if args.wheel is None:
        raise UsageError("counting instructions needs --wheel (or --native on a board)",
                         hint="rvtorch bench ops --wheel dist/torch-*-riscv64.whl")
    expect = args.expect_rvv == "yes"
    report = ops_bench.run_counts(args.wheel, models=args.cpu or ops_bench.DEFAULT_MODELS,
                                  expect_rvv=expect, n=args.n, size=args.size)
    out = args.output or (ops_bench.results_path() if expect else ops_bench.trial_path())
    ops_bench.write_report(report, out)
    print(ops_bench.count_table(report))
    print(json.dumps(report["summary"], indent=1))
    print(f"results: {out}")
    return 0
