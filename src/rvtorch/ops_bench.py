"""ATen ops, DEFAULT vs RVV: executed instructions under QEMU, wall-clock time on a board.

Under QEMU (``run_counts``; ``benchmarks/bench_aten_rvv.py``): the wheel is pip-installed into a
clean venv in the base rootfs (``validation.target_env``, as ``rvtorch validate --wheel``
does), then for every CPU model asked (default ``rvv128`` and ``rvv256`` of targets.toml) two
processes run ``ops_target.py count`` under the plugin-enabled QEMU of ``rvtorch.tcg_count``:
one with ``ATEN_CPU_CAPABILITY=default``, one with what torch picks. Each process reports the
capability it runs; a process that did not get the expected one fails the run (exit 5), so a
wheel without the RVV capability cannot produce a DEFAULT-vs-DEFAULT "comparison".

Instruction counts are a proxy: TCG's wall time says nothing about RVV speed, the count of
executed instructions does say how much work each capability leaves to the core. Speed is
measured on a board: ``rvtorch bench ops --native`` (``run_native``) times the same table.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import ops_target
from .errors import UsageError, ValidationError
from .paths import cache_dir, repo_root
from .validate.common import normalise_capability

HERE = Path(__file__).resolve().parent
DEFAULT_MODELS = ("rvv128", "rvv256")
EXPECT = ("yes", "no")
COUNT_TIMEOUT = 3600.0
CAPS = ("default", "chosen")  # the two processes per model: forced DEFAULT, torch's own pick


def results_path() -> Path:
    return repo_root() / "benchmarks" / "results" / "aten_rvv.json"


def trial_path() -> Path:
    """Where a run that expects no RVV writes: never the comparison's results file."""
    return cache_dir() / "ops-bench" / "aten_rvv-trial.json"


def expected_capability(cap: str, expect_rvv: bool) -> str:
    """What ``get_cpu_capability()`` must say in process ``cap`` of a vector CPU model."""
    if cap == "default":
        return "DEFAULT"
    return "RVV" if expect_rvv else "DEFAULT"


def check_capability(model: str, cap: str, got: str | None, expect_rvv: bool) -> None:
    """Validation error (exit 5) when a process ran another capability than expected."""
    want = expected_capability(cap, expect_rvv)
    if got is None or normalise_capability(got) != want:
        how = ("with ATEN_CPU_CAPABILITY=default" if cap == "default"
               else "with ATEN_CPU_CAPABILITY unset")
        hint = (" (a wheel built without --aten-rvv on has DEFAULT only: pass --expect-rvv no "
                "for a trial run)" if cap == "chosen" and want == "RVV" else "")
        raise ValidationError(f"on {model} {how} torch runs capability {got!r}, expected "
                              f"{want!r}: no honest DEFAULT-vs-RVV comparison{hint}")


# ------------------------------------------------------------------------- counting (QEMU)
def per_call(trace: Any, tags: Sequence[int], empty: float, n: int) -> dict[str, float]:
    """Instructions per call of one region, the empty region's count subtracted."""
    from .tcg_count import region

    r = region(trace, tags[0], tags[1])
    return {"insns": round((r.insns - empty) / n, 1), "vector": round(r.vector / n, 1)}


def analyse_process(trace: Any, result: Mapping[str, Any]) -> dict[str, Any]:
    """Per-op counts of one process from its plugin trace and its ops_target JSON."""
    from .tcg_count import region

    n = int(result["n"])
    empties = [region(trace, t[0], t[1]) for t in result["empty"]]
    if any(e.vector for e in empties):
        raise ValidationError("instruction counts: an empty region executed vector instructions")
    # The empty regions differ by a few instructions (allocator, interpreter state): their mean
    # is subtracted, their spread is recorded.
    empty = statistics.fmean(e.insns for e in empties)
    ops = {}
    for key, op in result["ops"].items():
        ops[key] = {"call": per_call(trace, op["tags"], empty, n),
                    "small": per_call(trace, op["small_tags"], empty, n)}
    return {"capability": normalise_capability(result["capability"]),
            "capability_reported": result["capability"], "torch": result["torch"],
            "threads": result["threads"],
            "empty_region": {"insns": [e.insns for e in empties], "mean": round(empty, 1)},
            "exit_insns": trace.exit[0] if trace.exit else None, "ops": ops}


def compare(default: Mapping[str, Any], chosen: Mapping[str, Any], size: int, rows: int,
            cols: int, kinds: Mapping[str, str]) -> dict[str, Any]:
    """Per op: DEFAULT and chosen counts per call, their ratio, and the per-element ratio
    (the one-element call's fixed cost taken off both)."""
    out = {}
    for key, d in default["ops"].items():
        c = chosen["ops"][key]
        elems = rows * cols if kinds[key] == "row" else size
        d_el = (d["call"]["insns"] - d["small"]["insns"]) / (elems - 1)
        c_el = (c["call"]["insns"] - c["small"]["insns"]) / (elems - 1)
        out[key] = {
            "default_insns": d["call"]["insns"], "rvv_insns": c["call"]["insns"],
            "rvv_vector_insns": c["call"]["vector"], "default_vector_insns": d["call"]["vector"],
            "ratio": round(d["call"]["insns"] / c["call"]["insns"], 2)
            if c["call"]["insns"] > 0 else None,
            "default_fixed_insns": d["small"]["insns"], "rvv_fixed_insns": c["small"]["insns"],
            "default_insns_per_element": round(d_el, 2), "rvv_insns_per_element": round(c_el, 2),
            "ratio_per_element": round(d_el / c_el, 2) if c_el > 0 else None,
        }
    return out


def _geomean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x and x > 0]
    return round(math.exp(statistics.fmean(math.log(x) for x in xs)), 2) if xs else None


def summarise(report: dict[str, Any]) -> None:
    s: dict[str, Any] = {"ops": len(report["ops"])}
    for model in report["meta"]["cpu_models"]:
        rows = {k: v[model] for k, v in report["ops"].items() if model in v}
        ew = {k: r for k, r in rows.items()
              if report["ops"][k]["kind"] == "elementwise" and report["ops"][k]["dtype"] ==
              "float32"}
        ratios = [r["ratio"] for r in ew.values() if r["ratio"]]
        s[model] = {
            "elementwise_float32_ops": len(ew),
            "elementwise_float32_ratio_min": min(ratios) if ratios else None,
            "elementwise_float32_ratio_geomean": _geomean(ratios),
            "elementwise_float32_ratio_max": max(ratios) if ratios else None,
            "elementwise_float32_ratio_per_element_geomean": _geomean(
                [r["ratio_per_element"] for r in ew.values() if r["ratio_per_element"]]),
            "all_ops_ratio_geomean": _geomean([r["ratio"] for r in rows.values() if r["ratio"]]),
            "ops_without_vector_insns": sorted(k for k, r in rows.items()
                                               if not r["rvv_vector_insns"]),
        }
    report["summary"] = s


def _wheel_meta(wheel: Path) -> dict[str, Any]:
    from .sources import sha256_file

    return {"name": wheel.name, "sha256": sha256_file(wheel),
            "size_mb": round(wheel.stat().st_size / 1e6, 1)}


def run_counts(wheel: Path, *, models: Sequence[str] = DEFAULT_MODELS, expect_rvv: bool = True,
               n: int = 5, size: int = ops_target.SIZE, mirror: str | None = None
               ) -> dict[str, Any]:
    """Count instructions per op in two processes per CPU model; see the module doc."""
    from . import tcg_count
    from .emulate import explicit_mode
    from .validation import Options, cpu_models, target_env

    arch = "riscv64"
    models_ = cpu_models(arch, models)
    for m in models_:
        if not m.vector:
            raise UsageError(f"--cpu {m.name}: no V extension; DEFAULT is all it can run",
                             hint=f"pick vector models ({', '.join(DEFAULT_MODELS)})")
    if n < 1 or size < 3:
        raise UsageError("--n must be >= 1 and --size >= 3")
    counting = tcg_count.ensure(mirror=mirror)
    # The counting QEMU is started explicitly (qemu -L): a binfmt entry points at the host's
    # static QEMU, which cannot load plugins; and the venv's guest paths must be those of the
    # explicit mode for the whole run (emulate.pinned_mode).
    opts = Options(arch=arch, cpus=tuple(m.name for m in models_), suites=(),
                   report=trial_path().parent / "unused", wheel=wheel)
    report: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%MZ"),
            "host": f"{platform.machine()} {os.cpu_count()} cpus",
            "wheel": _wheel_meta(wheel), "expect_rvv": expect_rvv,
            "cpu_models": {m.name: m.qemu_cpu for m in models_},
            "n": n, "size": size, "rows": ops_target.ROWS, "cols": ops_target.COLS,
            "threads": 1, "marker_nr": tcg_count.MARKER_NR, "counting": counting.to_json(),
            "load_avg_start": round(os.getloadavg()[0], 1),
            "method": "executed guest instructions per call (TCG plugin, inline per-TB "
                      "counters), N calls between two marker system calls, minus the mean "
                      "of empty regions (N no-op calls); a proxy for speed, not a timing"},
        "processes": {}, "ops": {}}
    table = ops_target.op_table()
    kinds = {ops_target.op_key(name, dt): kind for name, dt, kind in table}
    with explicit_mode(), target_env(opts) as (pyenv, info):
        report["meta"]["install"] = {k: info.get(k) for k in ("wheel", "install_s", "packages")}
        with pyenv.workdir() as (hdir, gdir):
            shutil.copy2(HERE / "ops_target.py", hdir / "ops_target.py")
            for model in models_:
                runs = {}
                # Torch's own pick first: a wheel without the capability fails after one process.
                for cap in reversed(CAPS):
                    runs[cap] = _count_process(counting, pyenv, model.name, cap, hdir, gdir,
                                               n=n, size=size)
                    got = runs[cap]["capability_reported"]  # as torch says it
                    report["processes"][f"{model.name}/{cap}"] = {
                        k: v for k, v in runs[cap].items() if k != "ops"}
                    check_capability(model.name, cap, got, expect_rvv)
                per_op = compare(runs["default"], runs["chosen"], size, ops_target.ROWS,
                                 ops_target.COLS, kinds)
                for key, row in per_op.items():
                    name, dt, kind = next(t for t in table if ops_target.op_key(t[0], t[1]) == key)
                    entry = report["ops"].setdefault(key, {"op": name, "dtype": dt, "kind": kind})
                    entry[model.name] = row
    report["meta"]["load_avg_end"] = round(os.getloadavg()[0], 1)
    summarise(report)
    return report


def _count_process(counting: Any, pyenv: Any, model: str, cap: str, hdir: Path, gdir: str, *,
                   n: int, size: int) -> dict[str, Any]:
    from .emulate import qemu_binary, resolve
    from .tcg_count import parse_output

    t = resolve("riscv64")
    assert t is not None
    trace_file = hdir / f"insns-{model}-{cap}.txt"
    out_name = f"ops-{model}-{cap}.json"
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    if cap == "default":
        env["ATEN_CPU_CAPABILITY"] = "default"
    cmd, genv = pyenv.command([f"{gdir}/ops_target.py", "count", "--out", f"{gdir}/{out_name}",
                               "--n", str(n), "--size", str(size)], cpu=model, env=env)
    # guest_command's explicit-QEMU argv starts with the target's qemu binary: the counting
    # QEMU and its plugin take its place, everything else (-L, -cpu, -0, the program) stays.
    if cmd[0] != qemu_binary(t):
        raise UsageError(f"expected an explicit QEMU command, got {cmd[0]!r}")
    cmd = [*counting.command(trace_file), *cmd[1:]]
    print(f"  {model} {cap}: counting ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=genv, capture_output=True, text=True,
                              timeout=COUNT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ValidationError(f"counting on {model} ({cap}) timed out after "
                              f"{COUNT_TIMEOUT:.0f} s") from exc
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise ValidationError(f"ops_target.py on {model} ({cap}) failed (exit {proc.returncode}): "
                              + (proc.stderr.strip().splitlines() or ["no output"])[-1][:300])
    result = json.loads((hdir / out_name).read_text())
    trace = parse_output(trace_file.read_text())
    row = analyse_process(trace, result)
    row["wall_s"] = round(wall, 1)
    row["aten_cpu_capability_env"] = env.get("ATEN_CPU_CAPABILITY")
    print(f"  {model} {cap}: capability {row['capability']}, {wall:.0f} s", file=sys.stderr,
          flush=True)
    return row


# ---------------------------------------------------------------------------- native timing
def run_native(*, min_time: float = 0.5, size: int = ops_target.SIZE,
               python: str = sys.executable) -> dict[str, Any]:
    """On a board: the op table timed in two processes (DEFAULT forced, torch's own pick)."""
    import tempfile

    report: dict[str, Any] = {"meta": {
        "mode": "native", "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "machine": platform.machine(), "host": f"{platform.machine()} {os.cpu_count()} cpus",
        "python": python, "size": size, "rows": ops_target.ROWS, "cols": ops_target.COLS,
        "min_time_s": min_time, "threads": 1,
        "load_avg_start": round(os.getloadavg()[0], 1)}, "processes": {}, "ops": {}}
    runs = {}
    with tempfile.TemporaryDirectory(prefix="rvtorch-ops-") as tmp:
        for cap in CAPS:
            env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
            env.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
            if cap == "default":
                env["ATEN_CPU_CAPABILITY"] = "default"
            out = Path(tmp) / f"{cap}.json"
            proc = subprocess.run([python, str(HERE / "ops_target.py"), "time", "--out", str(out),
                                   "--min-time", str(min_time), "--size", str(size)],
                                  env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                if "No module named 'torch'" in proc.stderr:
                    raise UsageError(f"{python} has no torch", hint="pip install the wheel first, "
                                     "or pass --python")
                raise ValidationError(f"ops_target.py time ({cap}) failed: {last[:300]}")
            runs[cap] = json.loads(out.read_text())
            report["processes"][cap] = {k: v for k, v in runs[cap].items() if k != "ops"}
    for run in runs.values():
        run["capability_reported"] = run["capability"]
        run["capability"] = normalise_capability(run["capability"])
    if runs["default"]["capability"] != "DEFAULT":
        raise ValidationError("ATEN_CPU_CAPABILITY=default did not give DEFAULT "
                              f"({runs['default']['capability']!r})")
    report["meta"]["chosen_capability"] = runs["chosen"]["capability"]
    for key, d in runs["default"]["ops"].items():
        c = runs["chosen"]["ops"][key]
        report["ops"][key] = {"op": d["op"], "dtype": d["dtype"], "kind": d["kind"],
                              "shape": d["shape"], "default_ns": d["ns_per_call"],
                              "chosen_ns": c["ns_per_call"],
                              "speedup": round(d["ns_per_call"] / c["ns_per_call"], 2)
                              if c["ns_per_call"] > 0 else None}
    report["meta"]["load_avg_end"] = round(os.getloadavg()[0], 1)
    report["summary"] = {"chosen_capability": runs["chosen"]["capability"],
                         "speedup_geomean": _geomean([r["speedup"] for r in report["ops"].values()
                                                      if r["speedup"]])}
    return report


# ------------------------------------------------------------------------------------ output
def count_table(report: Mapping[str, Any]) -> str:
    models = list(report["meta"]["cpu_models"])
    head = f"{'op':<16}" + "".join(f" | {m + ' DEFAULT':>15} {'RVV':>10} {'vector':>9} "
                                    f"{'ratio':>6} {'/elem':>6}" for m in models)
    lines = [head, "-" * len(head)]
    for key, entry in report["ops"].items():
        line = f"{key:<16}"
        for m in models:
            r = entry.get(m)
            if r is None:
                line += " | " + " " * 51
                continue
            line += (f" | {r['default_insns']:>15,.0f} {r['rvv_insns']:>10,.0f} "
                     f"{r['rvv_vector_insns']:>9,.0f} {r['ratio'] or 0:>6.2f} "
                     f"{r['ratio_per_element'] or 0:>6.2f}")
        lines.append(line)
    return "\n".join(lines)


def native_table(report: Mapping[str, Any]) -> str:
    cap = report["meta"]["chosen_capability"]
    head = f"{'op':<16} {'DEFAULT us':>11} {cap + ' us':>11} {'speed-up':>9}"
    lines = [head, "-" * len(head)]
    for key, r in report["ops"].items():
        lines.append(f"{key:<16} {r['default_ns'] / 1e3:>11.2f} {r['chosen_ns'] / 1e3:>11.2f} "
                     f"{r['speedup'] or 0:>9.2f}")
    lines.append(f"geometric mean speed-up: {report['summary']['speedup_geomean']}")
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, path)
