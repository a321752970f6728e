#!/usr/bin/env python3
"""Cold and warm creation time of the emulation root filesystems (rvtorch.rootfs).

In a fresh, empty cache (on the same file system as the real one), the way the emulated test
tier does it (tests/emulated/conftest.py): ``rvtorch rootfs create --arch A --with-torch`` for every
target of targets.toml and ``host``, all started at once (each builds its base rootfs first, then
the torch rootfs on top). Then the same commands again, one by one: warm (the cache answers).

Recorded per arch: wall seconds of the command, CPU seconds (user + sys of every process it
started, from wait4), the base and torch steps' own seconds (from the manifests), sizes, package
counts, torch version, BLAS. Overall: the wall time of the whole parallel cold run (what CI pays)
and the load average before/after: other jobs on the same 2 cores stretch wall time a lot, CPU
time much less.

Writes benchmarks/results/rootfs.json: this run's arches replace their entries, the entries of
arches it did not measure stay as an earlier run wrote them (each entry carries its own ``date``,
the arches created ``together`` with it and the load average before). Needs root. Run it in the
background: ``.venv/bin/python benchmarks/bench_rootfs.py > bench-rootfs.log 2>&1 &``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rvtorch.emulate import all_arches, qemu_binary, qemu_version, resolve
from rvtorch.paths import cache_dir, repo_root
from rvtorch.rootfs import _remove_tree

RESULTS = repo_root() / "benchmarks" / "results" / "rootfs.json"


def create_cmd(arch: str) -> list[str]:
    return [sys.executable, "-m", "rvtorch", "rootfs", "create", "--arch", arch, "--with-torch"]


def cold_parallel(arches: list[str], env: dict[str, str], logdir: Path) -> dict[str, dict]:
    """Start every creation at once; wall and CPU seconds per arch."""
    start = time.monotonic()
    procs = {}
    for arch in arches:
        log = (logdir / f"{arch}.log").open("w")
        procs[arch] = subprocess.Popen(create_cmd(arch), env=env, stdout=log, stderr=log)
    out: dict[str, dict] = {}
    pending = {p.pid: arch for arch, p in procs.items()}
    while pending:
        pid, status, usage = os.wait4(-1, 0)
        if pid not in pending:
            continue
        arch = pending.pop(pid)
        procs[arch].returncode = os.waitstatus_to_exitcode(status)
        out[arch] = {
            "cold_wall_s": round(time.monotonic() - start, 1),
            "cold_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "exit": procs[arch].returncode,
        }
    out["_all"] = {"cold_parallel_wall_s": round(time.monotonic() - start, 1)}
    return out


def collect(scratch: Path, out: Path) -> int:
    """Results from the manifests a run left in ``scratch`` (the run may have been stopped)."""
    results: dict[str, dict] = {}
    for manifest in sorted((scratch / "rootfs").glob("*.json")):
        m = json.loads(manifest.read_text())
        r = results.setdefault(m["arch"], {})
        kind = "torch" if m["with_torch"] else "base"
        r[f"{kind}_step_wall_s"] = m["seconds"]
        r[f"{kind}_created"] = m["created"]
        r[f"{kind}_packages"] = len(m["packages"])
        if m["with_torch"]:
            r["torch"], r["blas"] = m["torch"], m["blas"]
    unfinished = sorted(p.name for p in (scratch / "rootfs").glob(".*.tmp-*"))
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for r in results.values():
        r.update(date=date, together=sorted(results), interrupted_run=True)
    data = {
        "what": "collected from the manifests of an interrupted bench run (per-step wall "
                "seconds of the steps that completed, all arches started at once)",
        "unfinished": unfinished,
        "loadavg_at_collect": [round(x, 2) for x in os.getloadavg()],
        "date": date,
        "arches": {**previous_arches(out), **results},
    }
    out.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(json.dumps(data, indent=2))
    return 0


def previous_arches(path: Path) -> dict[str, dict]:
    """The per-arch entries an earlier run wrote (kept for the arches this run does not measure)."""
    try:
        arches = json.loads(path.read_text()).get("arches", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return arches if isinstance(arches, dict) else {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", action="append", help="arch to measure (repeatable; default all)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--collect", type=Path, metavar="CACHE",
                    help="only read the manifests of a (possibly interrupted) run's scratch "
                    "cache: per-step wall seconds of what completed; no CPU times")
    args = ap.parse_args()
    if args.collect:
        return collect(args.collect, args.out)
    if os.geteuid() != 0:
        print("bench_rootfs: needs root (debootstrap, chroot, binfmt)", file=sys.stderr)
        return 2
    arches = args.arch or list(all_arches())
    for arch in arches:
        resolve(arch)
    scratch = Path(tempfile.mkdtemp(prefix="bench-rootfs-", dir=cache_dir()))
    env = {**os.environ, "RVTORCH_CACHE": str(scratch)}
    load_before = os.getloadavg()
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        cold = cold_parallel(arches, env, scratch)
        load_after = os.getloadavg()
        results: dict[str, dict] = {}
        for arch in arches:
            r = dict(cold[arch])
            r.update(date=date, together=arches,
                     loadavg_before=[round(x, 2) for x in load_before])
            if r["exit"] != 0:
                print((scratch / f"{arch}.log").read_text()[-3000:], file=sys.stderr)
                raise SystemExit(f"bench_rootfs: creating {arch} failed")
            start = time.monotonic()
            subprocess.run(create_cmd(arch), env=env, check=True, stdout=subprocess.DEVNULL)
            r["warm_wall_s"] = round(time.monotonic() - start, 2)
            for manifest in sorted((scratch / "rootfs").glob("*.json")):
                m = json.loads(manifest.read_text())
                if m["arch"] != arch:
                    continue
                kind = "torch" if m["with_torch"] else "base"
                r[f"{kind}_step_wall_s"] = m["seconds"]
                du = subprocess.run(["du", "-sxm", str(manifest.with_suffix(""))],
                                    capture_output=True, text=True, check=True)
                r[f"{kind}_size_mib"] = int(du.stdout.split()[0])
                r[f"{kind}_packages"] = len(m["packages"])
                if m["with_torch"]:
                    r["torch"] = m["torch"]
                    r["blas"] = m["blas"]
            t = resolve(arch)
            if t is not None:
                r["qemu"] = qemu_version(qemu_binary(t))
                r["emulation_cpu"] = t.emulation_cpu
            results[arch] = r
            print(f"{arch}: {json.dumps(r)}", flush=True)
    finally:
        _remove_tree(scratch)
    data = {
        "what": "rvtorch rootfs create --with-torch for the measured arches at once in an empty "
                "cache (cold, as the emulated test tier does), then again one by one (warm); "
                "seconds; the top-level fields describe the last run",
        "cold_parallel_wall_s": cold["_all"]["cold_parallel_wall_s"],
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after_cold": [round(x, 2) for x in load_after],
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                 "kernel": platform.release()},
        "date": date,
        "arches": {**previous_arches(args.out), **results},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, args.out)
    print(json.dumps(data, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    # Killed (SIGTERM): still unmount and delete the scratch cache in main()'s finally.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main())
