#!/usr/bin/env python3
"""The riscv64 virtual board: boot, install and validation time, against qemu-user, in one run.

1. **Image**: the board image's and the trixie QEMU tree's own creation seconds (manifests;
   made once, reused afterwards).
2. **Boot**: ``board down`` then ``board up --cpu MODEL`` (cold boot of the cached image) until
   an SSH login works; the second ``up`` (reuse) too.
3. **Install**: ``board install`` of a wheel into a fresh venv over SSH: probe, copy (wheel +
   pinned wheelhouse), pip ``--no-index``, the first ``import torch``. The wheel is
   ``--wheel`` (our torch wheel), else the Debian-repaired stand-in of the emulated test
   (a real riscv64 extension, tiny: measures the fixed cost of the path).
4. **Validation, board vs qemu-user**: the same torch on both sides — Debian's python3-torch
   2.6.0, installed by apt on the board (a venv with ``--system-site-packages`` sees it) and in
   the rootfs of ``rvtorch validate --rootfs-torch`` — and the same suites (``--suite``,
   default smoke), the same CPU model: ``board validate --vm`` vs ``rvtorch validate``.
   With ``--wheel`` our wheel is validated on the board as well.
5. **Our wheel, board vs qemu-user** (``--wheel FILE --cpu A --cpu B``): per CPU model a cold
   boot, then ``board validate --vm --wheel`` (pip installs the wheel into a fresh venv on the
   board, then the suites) and ``rvtorch validate --wheel`` under qemu-user with the same model
   and suites: the same wheel, the same goldens, on both sides. Debian's torch is not needed.

Writes benchmarks/results/board.json (history of earlier runs kept). Needs root the first time
(the image). Run it in the background: ``.venv/bin/python benchmarks/bench_board.py >
bench-board.log 2>&1 &``; the host load average before and after is recorded (other jobs on
the same cores stretch every wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rvtorch.board.image import ensure_image, ensure_qemu, qemu_tree_path
from rvtorch.paths import repo_root
from rvtorch.targets import matrix

RESULTS = repo_root() / "benchmarks" / "results" / "board.json"
ARCH = "riscv64"


def cli(*args: str, timeout: float = 7200) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "rvtorch", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)
    wall = time.monotonic() - t0
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode != 0:
        raise SystemExit(f"bench_board: rvtorch {' '.join(args)} failed (exit "
                         f"{proc.returncode})")
    return proc, round(wall, 1)


def stand_in(out: Path) -> Path:
    # benchmarks/numbers.py would shadow the standard library's numbers module (pytest needs it).
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(repo_root()))
    from tests.emulated.test_board import stand_in_wheel

    return stand_in_wheel(out)


def suite_walls(report: dict[str, Any]) -> dict[str, float]:
    run = report["runs"][0]
    return {s: v["wall_s"] for s, v in run["suites"].items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="append", default=[],
                    help="CPU model of the board and of qemu-user (default rvv128; repeatable "
                    "with --wheel)")
    ap.add_argument("--suite", default="smoke", help="validation suites (comma list)")
    ap.add_argument("--wheel", type=Path, help="our torch wheel (default: the stand-in)")
    ap.add_argument("--reuse", action="store_true",
                    help="measure on the running board: its recorded boot time, no cold boot")
    ap.add_argument("--skip-validation", action="store_true",
                    help="boot and install only (the validation comparison needs Debian's "
                    "torch installed on the board: long under TCG)")
    ap.add_argument("--no-reinstall", action="store_true",
                    help="skip the second install (files already on the board)")
    args = ap.parse_args()
    t = matrix().target(ARCH)
    cpus = args.cpu or ["rvv128"]
    for c in cpus:
        t.cpu_model(c)  # an unknown model is a usage error before anything boots
    if len(cpus) > 1 and not args.wheel:
        raise SystemExit("bench_board: several --cpu need --wheel (our wheel on each board)")
    record: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "arch": ARCH, "cpu": cpus[0], "suites": args.suite,
                              "host_cores": os.cpu_count(), "load_before": os.getloadavg()}
    tree = ensure_qemu()
    image = ensure_image(t)
    qm = json.loads((qemu_tree_path() / "manifest.json").read_text())
    record["image"] = {"image_s": image.manifest["seconds"], "qemu_tree_s": qm["seconds"],
                       "qemu": tree.version, "kernel": image.manifest["kernel_package"],
                       "disk_mb": round(image.disk.stat().st_blocks * 512 / 1e6)}

    if args.wheel:
        record["cpus"] = cpus
        record["wheel"] = args.wheel.name
        record["per_cpu"] = {cpu: wheel_on_board_and_qemu_user(args.wheel, cpu, args.suite)
                             for cpu in cpus}
        return finish(record, args)
    args.cpu = cpus[0]
    if not args.reuse:
        cli("board", "down", "--arch", ARCH, "--discard")
        _, record["boot_s"] = cli("board", "up", "--arch", ARCH, "--cpu", args.cpu,
                                  "--timeout", "3000")
    status = json.loads(cli("board", "status", "--arch", ARCH, "--json")[0].stdout)
    if not status.get("running") or status.get("cpu") != args.cpu:
        raise SystemExit(f"bench_board: no running {args.cpu} board to measure on")
    record["boot_recorded_s"] = status["boot_seconds"]
    record["reused_board"] = args.reuse
    record["qemu_cpu_s_so_far"] = qemu_cpu_seconds(int(status["pid"]))
    _, record["reuse_s"] = cli("board", "up", "--arch", ARCH, "--cpu", args.cpu)

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or stand_in(Path(tmp))
        record["install_wheel"] = wheel.name
        _, record["install_s"] = cli("board", "install", "--vm", "--wheel", str(wheel),
                                     "--venv", "~/bench-venv")
        if not args.no_reinstall:
            # The same wheel again: the files are on the board already (nothing copied).
            _, record["reinstall_s"] = cli("board", "install", "--vm", "--wheel", str(wheel),
                                           "--venv", "~/bench-venv")
        record["qemu_cpu_s_after_install"] = qemu_cpu_seconds(int(status["pid"]))
        if args.skip_validation:
            record["validation"] = "not measured (--skip-validation)"
            return finish(record, args)

        # Debian's torch on the board, seen by a venv, as in the rootfs validation.
        _, record["apt_torch_on_board_s"] = cli(
            "board", "ssh", "--arch", ARCH, "--", "sh", "-c",
            "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get -q update && "
            "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get -q -y "
            "--no-install-recommends install python3-torch python3-numpy libopenblas0-pthread "
            "&& for l in libblas.so.3 liblapack.so.3; do sudo -n update-alternatives --set "
            "$l-riscv64-linux-gnu /usr/lib/riscv64-linux-gnu/openblas-pthread/$l; done && "
            "python3 -m venv --system-site-packages ~/debian-torch")
        board_dir, qemu_dir = Path(tmp) / "board", Path(tmp) / "qemu"
        _, record["validate_board_s"] = cli("board", "validate", "--vm", "--arch", ARCH,
                                            "--venv", "~/debian-torch", "--suite", args.suite,
                                            "--report", str(board_dir))
        _, record["validate_qemu_user_s"] = cli("validate", "--arch", ARCH, "--rootfs-torch",
                                                "--cpu", args.cpu, "--suite", args.suite,
                                                "--report", str(qemu_dir))
        board_rep = json.loads((board_dir / "report.json").read_text())
        qemu_rep = json.loads((qemu_dir / "report.json").read_text())
        record["suite_wall_s"] = {"board": suite_walls(board_rep),
                                  "qemu_user": suite_walls(qemu_rep)}
        record["checks"] = {"board": board_rep["checks_total"], "board_ok": board_rep["ok"],
                            "qemu_user": qemu_rep["checks_total"], "qemu_user_ok": qemu_rep["ok"]}
        smoke = board_rep["runs"][0]["suites"].get("smoke", {}).get("result") or {}
        record["board_openblas"] = (smoke.get("info") or {}).get("openblas_verbose")
        if args.wheel:
            wheel_dir = Path(tmp) / "wheel"
            _, record["validate_wheel_board_s"] = cli(
                "board", "validate", "--vm", "--wheel", str(args.wheel), "--suite", args.suite,
                "--report", str(wheel_dir))
            record["wheel_report"] = {
                k: json.loads((wheel_dir / "report.json").read_text())[k]
                for k in ("ok", "checks_total", "failures")}
    return finish(record, args)


def report_summary(rep: dict[str, Any]) -> dict[str, Any]:
    run = rep["runs"][0]
    return {"ok": rep["ok"], "checks_total": rep["checks_total"],
            "failures": rep.get("failures"), "cpu_model": run.get("cpu"),
            "suite_wall_s": suite_walls(rep),
            "suite_status": {s: v.get("status") for s, v in run["suites"].items()}}


def wheel_on_board_and_qemu_user(wheel: Path, cpu: str, suites: str) -> dict[str, Any]:
    """One CPU model: cold boot, pip install + suites on the board, the same under qemu-user."""
    rec: dict[str, Any] = {}
    cli("board", "down", "--arch", ARCH, "--discard")
    _, rec["boot_s"] = cli("board", "up", "--arch", ARCH, "--cpu", cpu, "--timeout", "3000")
    status = json.loads(cli("board", "status", "--arch", ARCH, "--json")[0].stdout)
    pid = int(status["pid"])
    rec["qemu_cpu_s_boot"] = qemu_cpu_seconds(pid)
    with tempfile.TemporaryDirectory() as tmp:
        board_dir, user_dir = Path(tmp) / "board", Path(tmp) / "qemu-user"
        _, rec["board_install_and_validate_s"] = cli(
            "board", "validate", "--vm", "--arch", ARCH, "--wheel", str(wheel),
            "--venv", "~/bench-venv", "--suite", suites, "--report", str(board_dir))
        rec["qemu_cpu_s_after_validate"] = qemu_cpu_seconds(pid)
        board_rep = json.loads((board_dir / "report.json").read_text())
        target = board_rep.get("target") or {}
        install = target.get("install") or {}
        rec["install_timings_s"] = install.get("timings")
        rec["board_cpu"] = {k: (target.get("cpu") or {}).get(k)
                            for k in ("isa", "vector", "vlen", "cpus")}
        rec["board_openblas_core"] = install.get("openblas_core")
        rec["board"] = report_summary(board_rep)
        _, rec["qemu_user_validate_s"] = cli(
            "validate", "--arch", ARCH, "--wheel", str(wheel), "--cpu", cpu, "--suite", suites,
            "--report", str(user_dir))
        rec["qemu_user"] = report_summary(json.loads((user_dir / "report.json").read_text()))
    cli("board", "down", "--arch", ARCH)
    print(f"{cpu}: boot {rec['boot_s']} s, board install+validate "
          f"{rec['board_install_and_validate_s']} s (ok {rec['board']['ok']}), qemu-user "
          f"validate {rec['qemu_user_validate_s']} s (ok {rec['qemu_user']['ok']})",
          file=sys.stderr)
    return rec


def qemu_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of the board's QEMU so far (load-independent cost)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def finish(record: dict[str, Any], args: argparse.Namespace) -> int:
    record["load_after"] = os.getloadavg()
    if not args.reuse:
        cli("board", "down", "--arch", ARCH)
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    history = old.get("history", [])
    if old.get("latest"):
        history.append(old["latest"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = RESULTS.with_suffix(".tmp")
    tmp_out.write_text(json.dumps({"latest": record, "history": history}, indent=1) + "\n")
    os.replace(tmp_out, RESULTS)
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
