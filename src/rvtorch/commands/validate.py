"""``rvtorch validate``: prove a torch (a wheel or Debian's) on a target under QEMU.

    rvtorch validate --arch riscv64 (--wheel FILE | --rootfs-torch) [--cpu MODEL ...]
                     [--suite smoke,reflow,fl] [--full] --report DIR

Exit 0 only if every requested suite ran and passed; 5 on a validation failure; 2 on bad
usage or when a requested suite could not run (skipped, with its reason: never a pass).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import FILE, REPORT_DIR
from ..errors import UsageError
from ..targets import matrix
from ..validation import (
    FAULTS,
    OPTIONAL_SUITES,
    SUITES,
    Options,
    parse_inject,
    parse_suites,
    raise_for_verdict,
    validate,
)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "validate",
        help="run the smoke, ReFlow and federated-learning suites on a target under QEMU",
        description="Runs the validation suites (docs/validation.md) in the target Python under "
        "QEMU on each CPU model and compares with the same code run on the x86 reference. "
        "Exit 0 only if every requested suite ran and passed, 5 on a validation failure, 2 on "
        "bad usage or when a requested suite could not run (a skip is never a pass).",
    )
    p.add_argument("--arch", required=True, help="targets.toml arch (riscv64, aarch64)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--wheel", type=FILE,
                     help="torch wheel to pip-install into a clean venv in the base rootfs (its "
                     "dependencies from the pinned wheelhouse, no Debian torch)")
    src.add_argument("--rootfs-torch", action="store_true",
                     help="validate Debian's python3-torch in the target rootfs")
    p.add_argument("--cpu", action="append", default=[], metavar="MODEL",
                   help="CPU model from targets.toml (repeatable; default: every model)")
    p.add_argument("--suite", default=",".join(SUITES),
                   help=f"comma list of suites (default {','.join(SUITES)}; on request: "
                   f"{','.join(OPTIONAL_SUITES)})")
    p.add_argument("--full", action="store_true",
                   help="train ReFlow teacher and student on the target too (hours under QEMU)")
    p.add_argument("--report", required=True, type=REPORT_DIR,
                   help="directory for the report (created before anything runs)")
    p.add_argument("--fl-ranks", type=int, default=3, help="FL processes (>= 3)")
    p.add_argument("--fl-rounds", type=int, default=5, help="FedAvg rounds")
    p.add_argument("--aten-rvv", choices=("auto", "on", "off"), default="auto",
                   help="the wheel carries ATen's RVV CPU capability (built with --aten-rvv on): "
                   "the vector CPU models must choose RVV and the others DEFAULT, and --suite ops "
                   "must compare RVV with DEFAULT. auto (default): what the wheel's "
                   "<wheel>.build-info.json beside it says, else off")
    p.add_argument("--inject", action="append", default=[], choices=FAULTS,
                   help="break something on purpose to prove the checks catch it (exit 5)")
    p.set_defaults(func=run)


def wheel_has_aten_rvv(wheel: Path | None, choice: str) -> bool:
    """``--aten-rvv``: on/off as said; auto reads the build-info the build published beside the
    wheel (its plan's ``features``). Debian's torch (no wheel) has no RVV capability."""
    if choice != "auto":
        if choice == "on" and wheel is None:
            raise UsageError("--aten-rvv on needs --wheel (Debian's torch has no RVV capability)")
        return choice == "on"
    info = wheel.with_name(wheel.name + ".build-info.json") if wheel is not None else None
    if info is None or not info.is_file():
        return False
    try:
        plan = json.loads(info.read_text()).get("plan") or {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{info.name}: unreadable build-info ({exc})") from exc
    return "aten-rvv" in (plan.get("features") or ())


def run(args: argparse.Namespace) -> int:
    t = matrix().target(args.arch)
    cpus = tuple(t.cpu_model(c).name for c in args.cpu)
    if args.wheel is not None:
        if not args.wheel.is_file():
            raise UsageError(f"wheel {args.wheel} not found")
        if not args.wheel.name.endswith(".whl"):
            raise UsageError(f"{args.wheel.name} is not a wheel (.whl)")
    if args.fl_ranks < 3:
        raise UsageError(f"--fl-ranks {args.fl_ranks}: the FL suite needs at least 3 ranks")
    if args.fl_rounds < 2:
        raise UsageError(f"--fl-rounds {args.fl_rounds}: need at least 2 rounds")
    opts = Options(arch=t.arch, cpus=cpus, suites=parse_suites(args.suite),
                   report=args.report, wheel=args.wheel.resolve() if args.wheel else None,
                   full=args.full, inject=parse_inject(args.inject), fl_ranks=args.fl_ranks,
                   fl_rounds=args.fl_rounds, aten_rvv=wheel_has_aten_rvv(args.wheel, args.aten_rvv))
    report = validate(opts)
    print(f"report: {args.report / 'report.html'}", file=sys.stderr)
    for run_ in report["runs"]:
        times = ", ".join(f"{s} {v.get('status', 'passed' if v['ok'] else 'failed')} "
                          f"{v['wall_s']:.0f} s" for s, v in run_["suites"].items())
        print(f"{t.arch} {run_['cpu']}: {times}")
    raise_for_verdict(report, args.report)
    print(f"validation passed: {report['checks_total']} checks on {t.arch} "
          f"({', '.join(r['cpu'] for r in report['runs'])})")
    return 0
