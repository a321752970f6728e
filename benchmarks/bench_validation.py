#!/usr/bin/env python3
"""Wall time of each validation suite per CPU model under QEMU, and natively on x86, in one run.

The native row runs exactly the target-side workload (``--role target`` against the same x86
references) in the x86 reference rootfs (Debian amd64 python3-torch 2.6.0, chroot), so the ratio
is the emulation cost of the same suite. Under QEMU the wall time says nothing about RVV speed on
hardware (docs/facts.md); it is the CI cost of the validation layer.

    sudo .venv/bin/python benchmarks/bench_validation.py [--arch riscv64 --arch aarch64]
                                                         [--suite smoke,reflow,fl]

Prints a table and writes ``benchmarks/results/validation.json``. Needs root (rootfs, chroot).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rvtorch.targets import matrix
from rvtorch.validation import (
    Options,
    ensure_references,
    host_env,
    parse_suites,
    run_model,
    summarise,
    target_env,
    validate,
)

RESULTS = Path(__file__).resolve().parent / "results" / "validation.json"


def suite_times(run: dict[str, Any]) -> dict[str, Any]:
    return {s: {"wall_s": round(v["wall_s"], 1), "cpu_s": round(v.get("cpu_s", 0.0), 1),
                "ok": v["ok"],
                "import_torch_s": ((v.get("result") or {}).get("timings") or {}).get(
                    "import_torch_s")}
            for s, v in run["suites"].items()}


def write(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--arch", action="append", default=[],
                    help="targets.toml arch (repeatable; default: every arch)")
    ap.add_argument("--suite", default="smoke,reflow,fl")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    arches = args.arch or list(matrix().arches)
    suites = parse_suites(args.suite)
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                       "kernel": platform.release()},
                           "suites": list(suites), "native_x86": {}, "emulated": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in arches:
            opts = Options(arch=arch, cpus=(), suites=suites, report=Path(tmp) / arch)
            t0 = time.monotonic()
            report = validate(opts)
            out["emulated"][arch] = {
                "qemu": report.get("qemu"), "ok": report["ok"],
                "failures": report["failures"], "total_wall_s": round(time.monotonic() - t0, 1),
                "cpu": {r["cpu"]: suite_times(r) for r in report["runs"]}}
            if not out["native_x86"]:
                # The same target-side workload, natively, against the same references.
                host = host_env()
                refs = ensure_references(opts, host)
                with target_env(opts) as (_, info):
                    pass
                native = run_model(opts, host, {"rootfs_torch": info.get("rootfs_torch")},
                                   None, refs)
                rep = {"arch": "host", "runs": [native]}
                summarise(rep)
                out["native_x86"] = {"ok": rep["ok"], "failures": rep["failures"],
                                     "suites": suite_times(native)}
            write(out, args.out)  # after every arch: a long run that is cut keeps what it had
    # The table: suite x (native, each arch/CPU model) with the slowdown factor.
    # CPU seconds next to wall seconds: on a shared 2-core machine the wall time depends on the
    # load of other jobs, the CPU time of the suite's own processes much less.
    print(f"{'suite':<8} {'where':<26} {'wall s':>8} {'CPU s':>8} {'CPU x native':>13}")
    for suite in suites:
        nat = out["native_x86"]["suites"][suite]
        print(f"{suite:<8} {'x86 native':<26} {nat['wall_s']:>8.1f} {nat['cpu_s']:>8.1f} "
              f"{1.0:>13.1f}")
        for arch, a in out["emulated"].items():
            for cpu, t in a["cpu"].items():
                w = t[suite]
                ratio = w["cpu_s"] / max(nat["cpu_s"], 1e-9)
                print(f"{suite:<8} {arch + ' ' + cpu:<26} {w['wall_s']:>8.1f} {w['cpu_s']:>8.1f} "
                      f"{ratio:>13.1f}")
    for arch, a in out["emulated"].items():
        per_model = {cpu: round(sum(v["wall_s"] for v in t.values()), 1)
                     for cpu, t in a["cpu"].items()}
        a["per_model_total_s"] = per_model
        print(f"{arch}: whole default suite per CPU model: {per_model}")
    write(out, args.out)
    print(f"wrote {args.out}")
    ok = all(a["ok"] for a in out["emulated"].values()) and out["native_x86"].get("ok")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
