#!/usr/bin/env python3
"""ReFlow ``--full`` under QEMU: the target trains teacher and student itself, beside the host.

What it runs, in one go:

1. **Host cost.** The x86 reference (Debian amd64 python3-torch 2.6.0 in the ``host`` rootfs,
   one thread) trains the reference teacher and student (``--role host``; cached by content hash
   like every validation reference, its original wall/CPU time is kept), then the target-side
   ``--full`` workload runs natively there: the baseline of the slowdown.
2. **Target training.** ``rvtorch validate --suite reflow --full --rootfs-torch`` on each CPU
   model (default: the first scalar and the last vector model of the arch, ``rv64`` and
   ``rvv256`` on riscv64; ``--cpu`` to choose), one process per model, ``--jobs`` of them at
   once. Same seeds and config as the host reference.

Writes ``benchmarks/results/reflow_full.json``: per CPU model the wall and CPU seconds, the
phase timings, the verdict, the metrics of the target-trained models next to the host-trained
ones, the per-mode shares, and which checks were computed from the target's own training.
Needs root (rootfs, chroot, binfmt).

    sudo .venv/bin/python benchmarks/bench_reflow_full.py [--arch riscv64] [--cpu rv64 --cpu rvv256]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
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
    run_model,
    summarise,
    validate,
)

RESULTS = Path(__file__).resolve().parent / "results" / "reflow_full.json"
METRICS = ("straightness", "sw_euler1", "sw_heun9_uniform", "mmd_reference", "var_ratio_euler1",
           "dist_to_ref_heun9_uniform", "off_mode_reference", "off_mode_heun9_uniform",
           "off_mode_euler1")


def write(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def pick(fig: dict[str, Any]) -> dict[str, Any]:
    """The headline metrics of one (teacher, student) figure block, rounded."""
    out: dict[str, Any] = {}
    for who in ("teacher", "student"):
        m = fig.get(who) or {}
        out[who] = {k: round(float(m[k]), 5) for k in METRICS if k in m}
    modes = fig.get("modes") or {}
    out["mode_mass"] = {who: {k: [round(x, 4) for x in v["mass"]]
                              for k, v in (modes.get(who) or {}).items()
                              if k in ("reference", "heun9_uniform", "euler1")}
                        for who in ("teacher", "student")}
    return out


def reflow_entry(suite: dict[str, Any]) -> dict[str, Any]:
    """What one reflow suite run (host role or a target CPU model) contributes to the results."""
    res = suite.get("result") or {}
    figs = res.get("figures") or {}
    checks = res.get("checks") or []
    by_basis: dict[str, dict[str, int]] = {}
    for c in checks:
        b = by_basis.setdefault(c.get("basis", "none"), {"passed": 0, "failed": 0})
        b["passed" if c["ok"] else "failed"] += 1
    out: dict[str, Any] = {
        "ok": bool(suite.get("ok")), "wall_s": suite.get("wall_s"), "cpu_s": suite.get("cpu_s"),
        "problem": suite.get("problem") or "",
        "timings_s": res.get("timings") or {},
        "checks_total": len(checks), "checks_by_basis": by_basis,
        "failed_checks": [c["name"] for c in checks if not c["ok"]],
        "checks_from_target_training": [
            {"name": c["name"], "ok": c["ok"], "value": c.get("value")}
            for c in checks if c.get("basis") == "target_training"],
    }
    for key, fig in figs.items():
        if isinstance(fig, dict) and "teacher" in fig:
            out.setdefault("metrics", {})[key] = pick(fig)
    return out


def _one_model(arch: str, cpu: str, report: Path, out: Path) -> None:
    """Child process: validate one CPU model with --full (own RUSAGE_CHILDREN for cpu_s)."""
    opts = Options(arch=arch, cpus=(cpu,), suites=("reflow",), report=report, full=True)
    try:
        rep = validate(opts)
        out.write_text(json.dumps({"report": rep}))
    except Exception as exc:  # recorded, so one model's failure does not lose the other's
        out.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))


def earlier_models(path: Path, now: list[str]) -> dict[str, Any]:
    """The emulated entries of an earlier run for the models this run does not repeat: a model
    costs a quarter of an hour of QEMU, so one can be added without redoing the others. Each
    entry says when it was recorded (the run's own date for entries written before this field)."""
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    kept = {}
    for cpu, e in (old.get("emulated") or {}).items():
        if cpu not in now:
            kept[cpu] = {"recorded": old.get("created"),
                         "load_avg_at_start": (old.get("machine") or {}).get("load_avg_at_start"),
                         **e}
    return kept


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--arch", default="riscv64")
    ap.add_argument("--cpu", action="append", default=[],
                    help="CPU model (repeatable; default: first scalar and last vector model)")
    ap.add_argument("--jobs", type=int, default=2, help="CPU models run at once")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--keep-others", action="store_true",
                    help="keep the earlier entries of the models not run now (each keeps its own "
                         "`recorded` date and the load average of its own run)")
    ap.add_argument("--merge-earlier", type=Path, metavar="OLD_JSON",
                    help="run nothing: add OLD_JSON's emulated entries for the models the results "
                         "file lacks (an earlier --keep-others run dropped them), then exit")
    args = ap.parse_args()
    if args.merge_earlier:
        cur = json.loads(args.out.read_text())
        kept = earlier_models(args.merge_earlier, list(cur.get("emulated") or {}))
        cur["emulated"] = {**kept, **(cur.get("emulated") or {})}
        write(cur, args.out)
        print(f"merged {', '.join(kept) or 'nothing'} from {args.merge_earlier}", file=sys.stderr)
        return 0
    t = matrix().target(args.arch)
    cpus = args.cpu or [t.scalar_models[0].name, t.vector_models[-1].name]
    for c in cpus:
        t.cpu_model(c)  # unknown model: usage error before any work
    t0 = time.monotonic()
    # Read before the first write below replaces the file.
    earlier = earlier_models(args.out, cpus) if args.keep_others else {}
    out: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kernel": platform.release(), "load_avg_at_start": os.getloadavg()},
        "arch": args.arch, "cpus": cpus, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                 time.gmtime()),
    }
    opts = Options(arch=args.arch, cpus=tuple(cpus), suites=("reflow",),
                   report=Path("unused"), full=True)
    # 1. The host: the reference training (as made, cached) and the --full workload natively.
    host = host_env()
    refs = ensure_references(opts, host)
    host_result = refs.results["reflow"] or {}
    meta = json.loads((refs.dirs["reflow"] / "host_result.json").read_text())
    out["config"] = (host_result.get("info") or {}).get("config")
    out["host_reference"] = {
        **reflow_entry({"result": host_result, "ok": host_result.get("ok"),
                        "wall_s": meta.get("wall_s"), "cpu_s": meta.get("cpu_s")}),
        "torch": (host_result.get("info") or {}).get("torch_version"),
        "made": meta.get("created")}
    print(f"host reference: {meta.get('cpu_s')} CPU s (made {meta.get('created')})",
          file=sys.stderr)
    native = run_model(opts, host, {}, None, refs)
    rep = {"arch": "host", "runs": [native]}
    summarise(rep)
    out["native_x86_full"] = reflow_entry(native["suites"]["reflow"])
    print(f"native --full: {out['native_x86_full']['cpu_s']} CPU s, ok "
          f"{out['native_x86_full']['ok']}", file=sys.stderr)
    write(out, args.out)
    # 2. The target trains, per CPU model, in child processes.
    out["emulated"] = earlier
    with tempfile.TemporaryDirectory() as tmp:
        ctx = multiprocessing.get_context("fork")
        pending = list(cpus)
        running: list[tuple[str, Any, Path]] = []
        while pending or running:
            while pending and len(running) < max(1, args.jobs):
                cpu = pending.pop(0)
                res_file = Path(tmp) / f"{cpu}.json"
                p = ctx.Process(target=_one_model,
                                args=(args.arch, cpu, Path(tmp) / f"report-{cpu}", res_file))
                p.start()
                running.append((cpu, p, res_file))
            time.sleep(2)
            for item in list(running):
                cpu, p, res_file = item
                if p.is_alive():
                    continue
                running.remove(item)
                got = json.loads(res_file.read_text()) if res_file.exists() else {
                    "error": f"exit {p.exitcode}, no result"}
                if "error" in got:
                    out["emulated"][cpu] = {"ok": False, "problem": got["error"]}
                else:
                    r = got["report"]
                    run = r["runs"][0]
                    out["emulated"][cpu] = {
                        **reflow_entry(run["suites"]["reflow"]),
                        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "load_avg_at_start": out["machine"]["load_avg_at_start"],
                        "qemu": r.get("qemu"), "qemu_cpu": run.get("qemu_cpu"),
                        "report_wall_s": r.get("wall_s"), "failures": r.get("failures")}
                e = out["emulated"][cpu]
                print(f"{args.arch} {cpu}: ok {e['ok']}, wall {e.get('wall_s')} s, CPU "
                      f"{e.get('cpu_s')} s {e.get('problem', '')}", file=sys.stderr)
                write(out, args.out)
    out["total_wall_s"] = round(time.monotonic() - t0, 1)
    nat = out["native_x86_full"].get("cpu_s") or 0.0
    for e in out["emulated"].values():
        if e.get("cpu_s") and nat:
            e["cpu_slowdown_vs_native"] = round(e["cpu_s"] / nat, 1)
    write(out, args.out)
    # The table: host-trained vs target-trained metrics per model.
    print(f"{'where':<22} {'wall s':>8} {'CPU s':>8}  ok")
    print(f"{'x86 reference (host)':<22} {meta.get('wall_s', 0):>8.1f} {meta.get('cpu_s', 0):>8.1f}"
          f"  {host_result.get('ok')}")
    print(f"{'x86 native --full':<22} {out['native_x86_full']['wall_s']:>8.1f} {nat:>8.1f}"
          f"  {out['native_x86_full']['ok']}")
    for cpu, e in out["emulated"].items():
        where = f"{args.arch} {cpu}"
        print(f"{where:<22} {e.get('wall_s') or 0:>8.1f} {e.get('cpu_s') or 0:>8.1f}  {e['ok']}")
    hm = (out["host_reference"].get("metrics") or {}).get("8gaussians") or {}
    for cpu, e in out["emulated"].items():
        tm = (e.get("metrics") or {}).get("8gaussians_target_trained") or {}
        for who in ("teacher", "student"):
            for k in METRICS:
                if k in (hm.get(who) or {}) and k in (tm.get(who) or {}):
                    print(f"{cpu:<8} {who:<8} {k:<28} host {hm[who][k]:>9.4f}  target "
                          f"{tm[who][k]:>9.4f}")
    print(f"wrote {args.out}")
    ok = out["native_x86_full"]["ok"] and all(e["ok"] for e in out["emulated"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
