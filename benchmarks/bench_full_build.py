#!/usr/bin/env python3
"""Full from-clean PyTorch cross build: wall time, ninja [n/N] progress, ccache stats, wheel size.

    python benchmarks/bench_full_build.py run [--arch riscv64] [--jobs 2]
        starts `rvtorch build --stage full` under `nice -n 5` in the background (ccache on, the
        log kept in the build tree), then polls it and rewrites the results file every minute
        until the build ends (Ctrl-C stops polling, not the build).
    python benchmarks/bench_full_build.py snapshot [--arch riscv64]
        records the progress reached so far (or the final numbers) from the build log.
    python benchmarks/bench_full_build.py warm [--arch riscv64]
        after a finished `run`: deletes the tree's build directory (the ccache stays) and builds
        the wheel again; recorded as `<arch>-warm`.

Results: benchmarks/results/full_build.json (one entry per arch). A full build takes hours on two
cores, so it is measured here, never in CI. Logs and wheels stay in the cache, never in git.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rvtorch import build  # noqa: E402
from rvtorch.paths import cache_dir  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "full_build.json"
_NINJA = re.compile(r"^\[(\d+)/(\d+)\] (.*)$", re.M)
_STEP = re.compile(r"^rvtorch: step (\w+) (\d+)$", re.M)


def bench_dir() -> Path:
    d = cache_dir() / "bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ccache(text: str) -> dict[str, Any]:
    """The numbers of `ccache --show-stats --verbose` (last block in the log)."""
    out: dict[str, Any] = {}
    block = text[text.rfind("Cacheable calls:") :] if "Cacheable calls:" in text else ""
    for key, pat in {
        "cacheable_calls": r"Cacheable calls:\s+(\d+)",
        "hits": r"^\s*Hits:\s+(\d+)",
        "misses": r"^\s*Misses:\s+(\d+)",
        "uncacheable_calls": r"Uncacheable calls:\s+(\d+)",
        "cache_size_gib": r"Cache size \((?:GiB|GB)\):\s+([\d.]+)",
    }.items():
        m = re.search(pat, block, re.M)
        if m:
            out[key] = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    return out


def summarize(log: Path, start: float, end: float | None, out_dir: Path | None) -> dict[str, Any]:
    text = log.read_text(errors="replace") if log.exists() else ""
    text = text[text.rfind("==== rvtorch build") :] if "==== rvtorch build" in text else text
    matches = list(_NINJA.finditer(text))
    now = end or time.time()
    steps = {m.group(1): int(m.group(2)) for m in _STEP.finditer(text)}
    names = list(steps)
    durations = {a: steps[b] - steps[a] for a, b in itertools.pairwise(names)}
    if names and names[-1] != "done":
        durations[names[-1] + " (so far)"] = int(now - steps[names[-1]])
    exit_m = re.findall(r"^rvtorch: exit (\d+)$", text, re.M)
    status = (
        "running" if end is None else ("finished" if exit_m and exit_m[-1] == "0" else "failed")
    )
    res: dict[str, Any] = {
        "status": status,
        "started": _iso(start),
        "elapsed_s": round(now - start),
        "elapsed_h": round((now - start) / 3600, 2),
        "step_durations_s": durations,
    }
    # ninja restarts its counter for each cmake --build; the last run is the main compile.
    big = [m for m in matches if int(m.group(2)) > 100]
    if big:
        done, total = int(big[-1].group(1)), int(big[-1].group(2))
        compile_start = steps.get("compile", start)
        rate = done / max(now - compile_start, 1)
        res["ninja"] = {
            "done": done,
            "total": total,
            "percent": round(100 * done / total, 1),
            "last": big[-1].group(3)[:160],
            "targets_per_min": round(rate * 60, 2),
            "eta_s": round((total - done) / rate) if rate and done < total else 0,
        }
    cc = parse_ccache(text)
    if cc:
        res["ccache"] = cc
    if out_dir is not None:
        wheels = sorted(out_dir.glob("torch-*.whl"))
        if wheels:
            res["wheel"] = {
                "name": wheels[-1].name,
                "size_mb": round(wheels[-1].stat().st_size / 1e6, 1),
            }
    errors = [ln for ln in text.splitlines() if "FAILED:" in ln or " error: " in ln][:3]
    if errors:
        res["first_errors"] = errors
    return res


def write_result(arch: str, entry: dict[str, Any]) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[arch] = entry
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(json.dumps(entry, indent=2))


def keep_previous(arch: str) -> None:
    """A new run keeps the earlier entry for its arch under ``history`` (never overwritten): a
    build that resumes a tree is only understood together with the runs before it."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if arch in data:
        data.setdefault("history", []).append(data.pop(arch))
        RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "loadavg_1_5_15": [round(x, 1) for x in os.getloadavg()],
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
    }


def _launch(args: argparse.Namespace, key: str, out: Path) -> int:
    """Start `rvtorch build --stage full` (nice 5, ccache) in the background, then poll it and
    rewrite the results entry ``key`` every minute until it ends."""
    plan = build.make_plan(
        args.arch, provider="debian", jobs=args.jobs, cache="ccache", stage="full", out=out,
        features=features(args),
    )
    marker = bench_dir() / f"full-{key}"
    marker.with_suffix(".start").write_text(_iso(time.time()) + "\n")
    marker.with_suffix(".end").unlink(missing_ok=True)
    keep_previous(key)
    log = bench_dir() / f"full-{key}.driver.log"
    # The README's main command itself (it installs the host packages and the venv it needs),
    # so a run on a fresh machine is also the rehearsal of that command.
    argv = [
        "nice", "-n", "5", str(ROOT / "scripts" / "build_torch.sh"), "--arch", args.arch,
        "--source", "debian", "--jobs", str(args.jobs), "--cache", "ccache", "--out", plan.out,
        *(["--aten-rvv", args.aten_rvv] if args.aten_rvv else []),
    ]
    fresh = starting_state(args.arch, features(args))
    (bench_dir() / f"full-{key}.state.json").write_text(json.dumps(fresh, indent=2) + "\n")
    with log.open("w") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    print(f"started pid {proc.pid}: {' '.join(argv)}; driver log {log}", file=sys.stderr)
    start = time.time()
    try:
        while proc.poll() is None:
            time.sleep(60)
            snapshot(args.arch, start, None, plan, key=key)
    except KeyboardInterrupt:
        print("stopped polling; the build goes on (use `snapshot` later)", file=sys.stderr)
        return 0
    marker.with_suffix(".end").write_text(_iso(time.time()) + "\n")
    snapshot(args.arch, start, time.time(), plan, rc=proc.returncode, key=key)
    return proc.returncode


def features(args: argparse.Namespace) -> tuple[str, ...]:
    """The optional patch groups of the run: what the main command resolves for the arch and
    ``--aten-rvv`` (not given: the build's default, on for riscv64)."""
    return build.resolve_features(args.arch, {"aten-rvv": getattr(args, "aten_rvv", None)})


def result_key(args: argparse.Namespace) -> str:
    """The results entry of a run: ``<arch>``, or ``<arch>-aten-rvv-on|off`` when the run named
    ``--aten-rvv`` (so the two capabilities' records sit side by side)."""
    return f"{args.arch}-aten-rvv-{args.aten_rvv}" if args.aten_rvv else args.arch


def starting_state(arch: str, feats: tuple[str, ...] = ()) -> dict[str, Any]:
    """What the machine held when the build started: a from-clean record needs an empty ccache,
    and a fresh machine has no binfmt_misc entry for the target."""
    ccache = cache_dir() / "ccache"
    objects = sum(1 for p in ccache.rglob("*") if p.is_file()) if ccache.is_dir() else 0
    return {"ccache_files": objects, "from_clean": objects == 0,
            "binfmt": build.host_binfmt(arch),
            "tree_existed": Path(build.make_plan(arch, provider="debian",
                                                 features=feats).tree).exists()}


def verdict(out_dir: Path) -> dict[str, Any] | None:
    """The validation verdict the build recorded in the published wheel's build-info."""
    infos = sorted(out_dir.glob("torch-*.whl.build-info.json"))
    if not infos:
        return None
    info = json.loads(infos[-1].read_text())
    return info.get("validation") or {"status": "not recorded by this build"}


def cmd_run(args: argparse.Namespace) -> int:
    key = result_key(args)
    return _launch(args, key, bench_dir() / f"dist-{key}")


def cmd_warm(args: argparse.Namespace) -> int:
    """Warm rebuild: the tree's build directory deleted (ccache kept), then a full build again.
    What a user pays after `git clean` or a changed flag that touches every object."""
    plan = build.make_plan(args.arch, provider="debian", jobs=args.jobs, cache="ccache",
                           stage="full")
    bdir = Path(plan.tree) / "build"
    if not (bdir / "build.ninja").exists():
        print(f"no finished build in {bdir}: run `run` first", file=sys.stderr)
        return 2
    old_log = bdir / "rvtorch-build.log"
    if old_log.exists():  # the from-clean log stays readable beside the results
        shutil.copy(old_log, bench_dir() / f"full-{args.arch}.build.log")
    shutil.rmtree(bdir)
    return _launch(args, f"{args.arch}-warm", bench_dir() / f"dist-{args.arch}-warm")


def snapshot(
    arch: str,
    start: float,
    end: float | None,
    plan: build.Plan,
    rc: int | None = None,
    runner: str | None = None,
    ccache_file: str | None = None,
    key: str | None = None,
) -> None:
    log = Path(plan.tree) / "build" / "rvtorch-build.log"
    stopped = rc is None and end is None and not build_running(plan)
    if stopped and log.exists():
        end = log.stat().st_mtime  # the build's last sign of life, not the time of the snapshot
    entry = summarize(log, start, end, Path(plan.out))
    state = bench_dir() / f"full-{key or arch}.state.json"
    if state.exists():
        entry["start_state"] = json.loads(state.read_text())
    found = verdict(Path(plan.out))
    if found is not None:
        entry["validation"] = found
    if rc is not None:
        entry["status"] = "finished" if rc == 0 else "failed"
        entry["rc"] = rc
    elif stopped:
        # No end marker and nobody holds the tree: the build was stopped from outside (a killed
        # driver, a session that ended), which is not a build failure.
        entry["status"] = "stopped"
    entry.update(
        {
            "arch": arch,
            "jobs": plan.jobs,
            "nice": 5,
            "cache": plan.cache,
            "source": plan.source["provider"],
            "machine": machine(),
            "flags": {k: v for k, v in plan.env.items() if k.startswith(("USE_", "BLAS"))},
            "features": list(plan.features),
            "recorded": _iso(time.time()),
        }
    )
    if runner:
        entry["runner"] = runner
    if ccache_file and "ccache" not in entry:
        # Mid-build statistics (`ccache --show-stats --verbose` run in the build environment).
        entry["ccache"] = parse_ccache(Path(ccache_file).read_text())
    write_result(key or arch, entry)


def build_running(plan: build.Plan) -> bool:
    """Whether a build holds the tree's lock (``rvtorch.build.tree_lock``) right now."""
    import fcntl

    lock = Path(plan.tree).parent / f".{Path(plan.tree).name}.lock"
    if not lock.exists():
        return False
    with lock.open() as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def cmd_snapshot(args: argparse.Namespace) -> int:
    plan = build.make_plan(
        args.arch,
        provider="debian",
        jobs=args.jobs,
        cache="ccache",
        stage="full",
        out=Path(args.out) if args.out else bench_dir() / f"dist-{result_key(args)}",
        features=features(args),
    )
    key = result_key(args)
    marker = bench_dir() / f"full-{key}"
    start_s = marker.with_suffix(".start").read_text().strip()
    start = dt.datetime.strptime(start_s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    end_f = marker.with_suffix(".end")
    end = (
        dt.datetime.strptime(end_f.read_text().strip(), "%Y-%m-%dT%H:%M:%SZ")
        .replace(tzinfo=dt.UTC)
        .timestamp()
        if end_f.exists()
        else None
    )
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if data.get(key, {}).get("started") not in (None, start_s):
        keep_previous(key)  # a snapshot of a new run never overwrites an older run
    snapshot(args.arch, start, end, plan, runner=args.runner, ccache_file=args.ccache_stats,
             key=key)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, func in (("run", cmd_run), ("warm", cmd_warm), ("snapshot", cmd_snapshot)):
        p = sub.add_parser(name)
        p.add_argument("--arch", default="riscv64")
        p.add_argument("--jobs", type=int, default=2)
        p.add_argument("--out", default=None)
        p.add_argument("--runner", default=None, help="free text: how the build was run")
        p.add_argument("--aten-rvv", choices=("on", "off"), default=None,
                       help="pass --aten-rvv to the build; results key <arch>-aten-rvv-<on|off>")
        p.add_argument("--ccache-stats", default=None,
                       help="file with `ccache --show-stats --verbose` output taken mid-build")
        p.set_defaults(func=func)
    args = ap.parse_args()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
