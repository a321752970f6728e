#!/usr/bin/env python3
"""Time per federated-learning round, C++ on FastFlow vs Python on torch.distributed (gloo).

The DML paper's worker counts (2, 4 and 7), on the same non-IID 8x8-digit shards
(``rvtorch.digits``), the same hyper-parameters (the Python scheme's: lr 0.05, momentum 0.5,
2 local epochs, batch 16, FedAvg weighted by shard size), in one run, on each platform given
(default: riscv64 under QEMU, and ``host``: natively on this x86 machine):

* C++: ``fedavg_master_worker`` and ``fedavg_p2p`` (FastFlow threads in one process, FastFlow
  from the project's recipe on the pinned source, libtorch 2.6.0 from Debian),
  ``summary.seconds_per_round``;
* Python: ``rvtorch.validate.fl`` (one process per rank, gloo over TCP on 127.0.0.1), mean of
  ``round_s`` per scheme, and the mean without its first round (gloo's start-up).

Both run in the platform's rootfs with Debian's torch (riscv64: under QEMU with the CPU model
given; host: chroot into the amd64 rootfs). FastFlow's source is only on GitHub: offline, point
``$RVTORCH_SOURCE_MIRROR`` (or ``--source-mirror``) at a folder with the pinned file. Without it
the C++ rows are recorded as skipped with the reason and the run exits 3: the C++ side is what
this benchmark is for. Under QEMU the numbers compare the two runtimes with each other on this
machine; they say nothing about a board's speed.

Writes ``benchmarks/results/fl_schemes.json`` after every row (``complete`` says whether the
run got to its end) with the load average at start and end. Needs root (rootfs, chroot) and the
toolchain image; run it in the background:
``nice -n 10 .venv/bin/python benchmarks/bench_fl_cpp_vs_py.py > fl.log 2>&1 &``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rvtorch import conan, fastflow_fl
from rvtorch.errors import RvtorchError
from rvtorch.paths import repo_root
from rvtorch.targets import matrix, target

RESULT = Path("benchmarks/results/fl_schemes.json")


def qemu_version(arch: str) -> str:
    binary = target(arch).qemu_binary
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return "missing"
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def _cpp_row(plat: str, cpu: str | None, w: int, scheme: str, rounds: int,
             train: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"platform": plat, "cpu": cpu, "impl": "cpp-fastflow",
                           "scheme": scheme, "workers": w}
    try:
        res = fastflow_fl.run_fastflow_fl(plat, cpu=cpu, workers=w, rounds=rounds,
                                          scheme=scheme, train=train)
    except RvtorchError as exc:
        return {**row, "error": exc.one_line()}
    s = res["summary"]
    return {**row, "seconds_per_round": s["seconds_per_round"],
            "round_s": [r["round_seconds"] for r in res["rounds"]],
            "final_accuracy": s["final_accuracy"], "models_equal": s["models_equal"],
            "process_wall_seconds": round(res["wall_seconds"], 2)}


def _py_rows(plat: str, cpu: str | None, w: int, rounds: int) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"platform": plat, "cpu": cpu, "impl": "python-gloo", "workers": w}
    try:
        py = fastflow_fl.run_python_fl(plat, cpu=cpu, workers=w, rounds=rounds)
    except RvtorchError as exc:
        print(f"{plat}: python scheme, {w} workers: {exc.one_line()}", file=sys.stderr,
              flush=True)
        return [{**base, "scheme": scheme, "error": exc.one_line()}
                for scheme in fastflow_fl.SCHEMES]
    rows = []
    for scheme, fig in py["schemes"].items():
        steady = fig["round_s"][1:] or fig["round_s"]
        rows.append({**base, "scheme": scheme,
                     "seconds_per_round": round(statistics.mean(fig["round_s"]), 4),
                     # the first round of the first scheme carries gloo's warm-up
                     "seconds_per_round_after_first": round(statistics.mean(steady), 4),
                     "round_s": fig["round_s"], "final_accuracy": fig["accuracy"][-1],
                     "launch_wall_seconds": round(py["wall_seconds"], 2)})
    return rows


def write(out: Path, result: dict[str, Any]) -> None:
    """Replace ``out`` atomically (temp file + rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(result, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--platforms", default=f"{matrix().arches[0]},{fastflow_fl.HOST}",
                   help="comma-separated: targets.toml arches (under QEMU) and/or 'host' "
                   "(native); default: %(default)s")
    p.add_argument("--cpu", default=None,
                   help="CPU model for the QEMU platforms (targets.toml name); default: first")
    p.add_argument("--workers", default="2,4,7", help="comma-separated worker counts")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--source-mirror", type=Path, default=None,
                   help="folder with FastFlow's pinned archive (default: $RVTORCH_SOURCE_MIRROR)")
    p.add_argument("--out", type=Path, default=repo_root() / RESULT)
    args = p.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    platforms = [x.strip() for x in args.platforms.split(",") if x.strip()]
    for plat in platforms:
        if plat != fastflow_fl.HOST:
            target(plat)  # unknown arch: usage error before anything runs
    if args.source_mirror is not None:
        os.environ[conan.SOURCE_MIRROR_ENV] = str(args.source_mirror.resolve())
    train = {**fastflow_fl.PY_SCHEME, "weighted": True}

    skip_cpp = fastflow_fl.fastflow_missing()
    if skip_cpp:
        print(f"C++ schemes skipped: {skip_cpp}", file=sys.stderr)
    src = fastflow_fl.fastflow_source()
    rows: list[dict[str, Any]] = []
    cpus = {plat: None if plat == fastflow_fl.HOST else (args.cpu or target(plat).cpu[0].name)
            for plat in platforms}
    result: dict[str, Any] = {
        "benchmark": "fl_schemes",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "platforms": platforms, "cpu": cpus, "rounds": args.rounds, "workers": counts,
        "train": train, "qemu": {plat: qemu_version(plat) for plat in platforms
                                 if plat != fastflow_fl.HOST},
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                 "load_average_start": [round(x, 2) for x in os.getloadavg()]},
        "fastflow": {"ref": src.ref, "sha256": src.sha256},
        "libtorch": "Debian 2.6.0+dfsg-7 (libtorch-debian.toml)",
        "cpp_skipped": skip_cpp, "complete": False, "rows": rows,
    }

    def add(row: dict[str, Any]) -> None:
        # Written after every row (complete: false until the last): a run cut short keeps
        # what it measured, and says so.
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(args.out, result)

    # Every C++ row first (minutes), then the Python launches (gloo under QEMU is the long
    # part), so a run cut short on a loaded machine still has the whole C++ side.
    for plat in platforms:
        for w in counts:
            for scheme in fastflow_fl.SCHEMES:
                if skip_cpp:
                    add({"platform": plat, "cpu": cpus[plat], "impl": "cpp-fastflow",
                         "scheme": scheme, "workers": w, "skipped": skip_cpp})
                else:
                    add(_cpp_row(plat, cpus[plat], w, scheme, args.rounds, train))
    for plat in platforms:
        for w in counts:
            for row in _py_rows(plat, cpus[plat], w, args.rounds):
                add(row)

    print(f"\n{'platform':<10}{'impl':<14}{'scheme':<15}{'workers':>8}{'s/round':>10}"
          f"{'accuracy':>10}")
    for r in rows:
        spr = r.get("seconds_per_round")
        acc = r.get("final_accuracy")
        print(f"{r['platform']:<10}{r['impl']:<14}{r['scheme']:<15}{r['workers']:>8}"
              f"{(f'{spr:.3f}' if spr is not None else 'skip'):>10}"
              f"{(f'{acc:.3f}' if acc is not None else '-'):>10}")
    result["complete"] = True
    result["host"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    write(args.out, result)
    print(f"wrote {args.out}")
    failed = [r for r in rows if "error" in r]
    if skip_cpp or failed:
        print(f"{len(failed)} row(s) failed" + (" and the C++ rows were skipped" if skip_cpp
                                                 else ""), file=sys.stderr)
        return 3 if skip_cpp else 5
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
