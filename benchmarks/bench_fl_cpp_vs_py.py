#!/usr/bin/env python3
"""Time per federated-learning round under QEMU: C++ on FastFlow vs Python on torch.distributed.

The DML paper's worker counts (2, 4 and 7), on the same non-IID 8x8-digit shards
(``rvtorch.digits``), the same hyper-parameters (the Python scheme's: lr 0.05, momentum 0.5,
2 local epochs, batch 16, FedAvg weighted by shard size), in one run:

* C++: ``fedavg_master_worker`` and ``fedavg_p2p`` (FastFlow threads in one process, libtorch
  2.6.0 from Debian), ``summary.seconds_per_round``;
* Python: ``rvtorch.validate.fl`` (one guest process per rank, gloo over TCP on 127.0.0.1),
  mean of ``round_s`` per scheme.

Both run in the target rootfs with Debian's torch under the same QEMU and CPU model. FastFlow's
source is only on GitHub: where it is not available the C++ rows are recorded as skipped with
the reason (which file, which sha256, how to provide it) and the Python rows are still measured.
Under QEMU the numbers compare the two runtimes with each other on this machine; they say
nothing about a board's speed.

Writes ``benchmarks/results/fl_schemes.json``. Needs root (rootfs, chroot) and the toolchain
image; run it niced in the background:
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

from rvtorch import fastflow_fl
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default=matrix().arches[0], choices=matrix().arches)
    p.add_argument("--cpu", default=None, help="CPU model (targets.toml name); default: first")
    p.add_argument("--workers", default="2,4,7", help="comma-separated worker counts")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=repo_root() / RESULT)
    args = p.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    cpu = args.cpu or target(args.arch).cpu[0].name
    train = {**fastflow_fl.PY_SCHEME, "weighted": True}

    skip_cpp = fastflow_fl.fastflow_missing()
    if skip_cpp:
        print(f"C++ schemes skipped: {skip_cpp}", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    for w in counts:
        if skip_cpp:
            for scheme in fastflow_fl.SCHEMES:
                rows.append({"impl": "cpp-fastflow", "scheme": scheme, "workers": w,
                             "skipped": skip_cpp})
        else:
            for scheme in fastflow_fl.SCHEMES:
                try:
                    res = fastflow_fl.run_fastflow_fl(args.arch, cpu=cpu, workers=w,
                                                      rounds=args.rounds, scheme=scheme,
                                                      train=train)
                except RvtorchError as exc:
                    rows.append({"impl": "cpp-fastflow", "scheme": scheme, "workers": w,
                                 "error": exc.one_line()})
                    continue
                s = res["summary"]
                rows.append({"impl": "cpp-fastflow", "scheme": scheme, "workers": w,
                             "seconds_per_round": s["seconds_per_round"],
                             "round_s": [r["round_seconds"] for r in res["rounds"]],
                             "final_accuracy": s["final_accuracy"],
                             "models_equal": s["models_equal"],
                             "process_wall_seconds": round(res["wall_seconds"], 2)})
        try:
            py = fastflow_fl.run_python_fl(args.arch, cpu=cpu, workers=w, rounds=args.rounds)
        except RvtorchError as exc:
            print(f"python scheme, {w} workers: {exc.one_line()}", file=sys.stderr, flush=True)
            for scheme in fastflow_fl.SCHEMES:
                rows.append({"impl": "python-gloo", "scheme": scheme, "workers": w,
                             "error": exc.one_line()})
            continue
        for scheme, fig in py["schemes"].items():
            rows.append({"impl": "python-gloo", "scheme": scheme, "workers": w,
                         "seconds_per_round": round(statistics.mean(fig["round_s"]), 4),
                         # the first round of the first scheme carries gloo's warm-up
                         "round_s": fig["round_s"],
                         "final_accuracy": fig["accuracy"][-1],
                         "launch_wall_seconds": round(py["wall_seconds"], 2)})
        for r in rows[-4:]:
            print(json.dumps(r), flush=True)

    print(f"\n{'impl':<14}{'scheme':<15}{'workers':>8}{'s/round':>10}{'accuracy':>10}")
    for r in rows:
        spr = r.get("seconds_per_round")
        acc = r.get("final_accuracy")
        print(f"{r['impl']:<14}{r['scheme']:<15}{r['workers']:>8}"
              f"{(f'{spr:.3f}' if spr is not None else 'skip'):>10}"
              f"{(f'{acc:.3f}' if acc is not None else '-'):>10}")
    result = {
        "benchmark": "fl_schemes",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "arch": args.arch, "cpu": cpu, "rounds": args.rounds, "workers": counts,
        "train": train, "qemu": qemu_version(args.arch),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
        "cpp_skipped": skip_cpp, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=f".{args.out.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(result, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
