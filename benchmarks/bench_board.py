#!/usr/bin/env python3
"""The virtual board (riscv64, aarch64): boot, install and validation time, against qemu-user.

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
5. **A wheel, board vs qemu-user** (``--wheel FILE --cpu A --cpu B``): per CPU model a cold
   boot, then ``board validate --vm --wheel`` (pip installs the wheel into a fresh venv on the
   board, then the suites) and ``rvtorch validate --wheel`` under qemu-user with the same model
   and suites: the same wheel, the same goldens, on both sides. Debian's torch is not needed.
   ``--debian-stand-in`` takes the emulated tier's Debian-repaired stand-in wheel of ``--arch``
   (tests/emulated/debian_wheel.py: Debian's torch 2.6.0 binaries packed and repaired by
   rvtorch, not built by it) where no wheel of ours exists; the record says which it was.
6. **The test tier** (``--test-tier``): runs the default selection of
   tests/emulated/test_board.py (what ``./scripts/test.sh emulated`` runs of it) and records each
   test's time (pytest's JUnit XML: setup + call + teardown, so the first test carries the boot)
   and whether the board image and the stand-in wheel had to be made first.

``--arch`` (default riscv64) picks the board. Writes benchmarks/results/board.json: the riscv64
record at ``latest`` (earlier ones in ``history``), other arches under their name
(``aarch64.latest``/``aarch64.history``), the test tier under ``test_tier``; every other key of
the file is kept. Needs root the first time (the image). Run it in the background:
``.venv/bin/python benchmarks/bench_board.py > bench-board.log 2>&1 &``; the host load average
before and after is recorded (other jobs on the same cores stretch every wall time).
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
from xml.etree import ElementTree

from rvtorch.board.image import ensure_image, ensure_qemu, qemu_tree_path
from rvtorch.paths import cache_dir, repo_root
from rvtorch.targets import Target, matrix

RESULTS = repo_root() / "benchmarks" / "results" / "board.json"
# The arch whose record sits at the file's top level (docs read latest.per_cpu.*).
MAIN_ARCH = "riscv64"
STAND_IN = ("Debian-repaired stand-in: Debian trixie's python3-torch 2.6.0+dfsg binaries packed as "
            "a wheel and repaired by rvtorch.wheel.repair_wheel (tests/emulated/debian_wheel.py), "
            "not a wheel rvtorch built")
TEST_FILE = "tests/emulated/test_board.py"


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


def _tests_importable() -> None:
    # Run from benchmarks/, its directory leads sys.path; the tests package lives at the root.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(repo_root()))


def stand_in(out: Path) -> Path:
    _tests_importable()
    from tests.emulated.test_board import stand_in_wheel

    return stand_in_wheel(out)


def debian_stand_in(arch: str) -> tuple[Path, float]:
    """The emulated tier's Debian-repaired torch wheel of ``arch`` (made once, cached)."""
    _tests_importable()
    from tests.emulated.debian_wheel import debian_torch_wheel

    t0 = time.monotonic()
    wheel = debian_torch_wheel(arch)
    return wheel, round(time.monotonic() - t0, 1)


def suite_walls(report: dict[str, Any]) -> dict[str, float]:
    run = report["runs"][0]
    return {s: v["wall_s"] for s, v in run["suites"].items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default=MAIN_ARCH,
                    help="the board's arch: riscv64 (default) or aarch64")
    ap.add_argument("--cpu", action="append", default=[],
                    help="CPU model of the board and of qemu-user (default: the arch's first "
                    "listed in targets.toml; repeatable with --wheel)")
    ap.add_argument("--suite", default="smoke", help="validation suites (comma list)")
    ap.add_argument("--wheel", type=Path, help="our torch wheel (default: the stand-in)")
    ap.add_argument("--debian-stand-in", action="store_true",
                    help="as --wheel: the Debian-repaired stand-in wheel of --arch")
    ap.add_argument("--test-tier", action="store_true",
                    help="time the default selection of tests/emulated/test_board.py")
    ap.add_argument("--reuse", action="store_true",
                    help="measure on the running board: its recorded boot time, no cold boot")
    ap.add_argument("--skip-validation", action="store_true",
                    help="boot and install only (the validation comparison needs Debian's "
                    "torch installed on the board: long under TCG)")
    ap.add_argument("--no-reinstall", action="store_true",
                    help="skip the second install (files already on the board)")
    args = ap.parse_args()
    t = matrix().target(args.arch)
    if args.test_tier:
        return run_test_tier(args)
    cpus = args.cpu or [t.cpu[0].name]
    for c in cpus:
        t.cpu_model(c)  # an unknown model is a usage error before anything boots
    if args.wheel and args.debian_stand_in:
        raise SystemExit("bench_board: --wheel or --debian-stand-in, not both")
    if len(cpus) > 1 and not (args.wheel or args.debian_stand_in):
        raise SystemExit("bench_board: several --cpu need --wheel (a wheel on each board)")
    record: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "arch": t.arch, "cpu": cpus[0], "suites": args.suite,
                              "host_cores": os.cpu_count(), "load_before": os.getloadavg()}
    record["image"] = image_record(t)

    if args.debian_stand_in:
        args.wheel, record["wheel_made_s"] = debian_stand_in(t.arch)
        record["wheel_kind"] = STAND_IN
    elif args.wheel:
        record["wheel_kind"] = "given with --wheel"
    if args.wheel:
        record["cpus"] = cpus
        record["wheel"] = args.wheel.name
        record["per_cpu"] = {cpu: wheel_on_board_and_qemu_user(t.arch, args.wheel, cpu,
                                                               args.suite)
                             for cpu in cpus}
        return finish(record, args)
    arch = t.arch
    args.cpu = cpus[0]
    if not args.reuse:
        cli("board", "down", "--arch", arch, "--discard")
        _, record["boot_s"] = cli("board", "up", "--arch", arch, "--cpu", args.cpu,
                                  "--timeout", "3000")
    status = json.loads(cli("board", "status", "--arch", arch, "--json")[0].stdout)
    if not status.get("running") or status.get("cpu") != args.cpu:
        raise SystemExit(f"bench_board: no running {args.cpu} board to measure on")
    record["boot_recorded_s"] = status["boot_seconds"]
    record["reused_board"] = args.reuse
    record["qemu_cpu_s_so_far"] = qemu_cpu_seconds(int(status["pid"]))
    _, record["reuse_s"] = cli("board", "up", "--arch", arch, "--cpu", args.cpu)

    with tempfile.TemporaryDirectory() as tmp:
        wheel = stand_in(Path(tmp)) if arch == "riscv64" else debian_stand_in(arch)[0]
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
        lib = f"/usr/lib/{t.triple}/openblas-pthread"
        _, record["apt_torch_on_board_s"] = cli(
            "board", "ssh", "--arch", arch, "--", "sh", "-c",
            "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get -q update && "
            "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get -q -y "
            "--no-install-recommends install python3-torch python3-numpy libopenblas0-pthread "
            f"&& for l in libblas.so.3 liblapack.so.3; do sudo -n update-alternatives --set "
            f"$l-{t.triple} {lib}/$l; done && "
            "python3 -m venv --system-site-packages ~/debian-torch")
        board_dir, qemu_dir = Path(tmp) / "board", Path(tmp) / "qemu"
        _, record["validate_board_s"] = cli("board", "validate", "--vm", "--arch", arch,
                                            "--venv", "~/debian-torch", "--suite", args.suite,
                                            "--report", str(board_dir))
        _, record["validate_qemu_user_s"] = cli("validate", "--arch", arch, "--rootfs-torch",
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
    return finish(record, args)


def image_record(t: Target) -> dict[str, Any]:
    """The board image's and the QEMU tree's creation seconds (made now if missing)."""
    tree = ensure_qemu()
    image = ensure_image(t)
    qm = json.loads((qemu_tree_path() / "manifest.json").read_text())
    return {"image_s": image.manifest["seconds"], "image_created": image.manifest["created"],
            "qemu_tree_s": qm["seconds"], "qemu": tree.version,
            "kernel": image.manifest["kernel_package"],
            "disk_mb": round(image.disk.stat().st_blocks * 512 / 1e6)}


def report_summary(rep: dict[str, Any]) -> dict[str, Any]:
    run = rep["runs"][0]
    return {"ok": rep["ok"], "checks_total": rep["checks_total"],
            "failures": rep.get("failures"), "cpu_model": run.get("cpu"),
            "suite_wall_s": suite_walls(rep),
            "suite_status": {s: v.get("status") for s, v in run["suites"].items()}}


def wheel_on_board_and_qemu_user(arch: str, wheel: Path, cpu: str,
                                 suites: str) -> dict[str, Any]:
    """One CPU model: cold boot, pip install + suites on the board, the same under qemu-user."""
    rec: dict[str, Any] = {}
    cli("board", "down", "--arch", arch, "--discard")
    _, rec["boot_s"] = cli("board", "up", "--arch", arch, "--cpu", cpu, "--timeout", "3000")
    status = json.loads(cli("board", "status", "--arch", arch, "--json")[0].stdout)
    pid = int(status["pid"])
    rec["qemu_cpu_s_boot"] = qemu_cpu_seconds(pid)
    with tempfile.TemporaryDirectory() as tmp:
        board_dir, user_dir = Path(tmp) / "board", Path(tmp) / "qemu-user"
        _, rec["board_install_and_validate_s"] = cli(
            "board", "validate", "--vm", "--arch", arch, "--wheel", str(wheel),
            "--venv", "~/bench-venv", "--suite", suites, "--report", str(board_dir))
        rec["qemu_cpu_s_after_validate"] = qemu_cpu_seconds(pid)
        board_rep = json.loads((board_dir / "report.json").read_text())
        target = board_rep.get("target") or {}
        install = target.get("install") or {}
        rec["install_timings_s"] = install.get("timings")
        rec["board_cpu"] = {k: (target.get("cpu") or {}).get(k)
                            for k in ("machine", "isa", "features", "vector", "vlen", "cpus")}
        rec["board_openblas_core"] = install.get("openblas_core")
        rec["board_torch_version"] = (install.get("torch") or {}).get("version")
        rec["board"] = report_summary(board_rep)
        _, rec["qemu_user_validate_s"] = cli(
            "validate", "--arch", arch, "--wheel", str(wheel), "--cpu", cpu, "--suite", suites,
            "--report", str(user_dir))
        rec["qemu_user"] = report_summary(json.loads((user_dir / "report.json").read_text()))
    cli("board", "down", "--arch", arch)
    print(f"{arch} {cpu}: boot {rec['boot_s']} s, board install+validate "
          f"{rec['board_install_and_validate_s']} s (ok {rec['board']['ok']}), qemu-user "
          f"validate {rec['qemu_user_validate_s']} s (ok {rec['qemu_user']['ok']})",
          file=sys.stderr)
    return rec


def run_test_tier(args: argparse.Namespace) -> int:
    """The default selection of the board tests, timed per test (see the module docstring)."""
    t = matrix().target(MAIN_ARCH)
    record: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "host_cores": os.cpu_count(), "load_before": os.getloadavg()}
    _tests_importable()
    from rvtorch.board.image import _load_image, _load_qemu, image_path
    from rvtorch.rootfs import ensure_rootfs
    from tests.emulated.debian_wheel import _key

    wheels = (cache_dir() / "test-wheels" /
              f"debian-{_key(t.arch, ensure_rootfs(t.arch, with_torch=True))}")
    record["made_before_run"] = {
        "qemu_tree": _load_qemu(qemu_tree_path()) is not None,
        "image": _load_image(image_path(t), t) is not None,
        "stand_in_wheel": bool(sorted(wheels.glob("torch-*.whl")))}
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        t0 = time.monotonic()
        # The selection ./scripts/test.sh's emulated tier makes (slow tests deselected).
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
             "emulated and not slow", f"--junitxml={junit}", TEST_FILE],
            cwd=repo_root(), text=True, capture_output=True, check=False,
            env={**os.environ, "RVTORCH_ROOTFS_PREWARM": "0"})
        record["wall_s"] = round(time.monotonic() - t0, 1)
        sys.stderr.write(proc.stdout[-6000:] + proc.stderr[-3000:])
        record["pytest_exit"] = proc.returncode
        tests: dict[str, Any] = {}
        suite = ElementTree.parse(junit).getroot()
        for case in suite.iter("testcase"):
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                if case.find(tag) is not None:
                    outcome = tag
            tests[case.get("name", "?")] = {"s": round(float(case.get("time", 0)), 1),
                                            "outcome": outcome}
        record["tests"] = tests
    record["image"] = image_record(t)
    record["load_after"] = os.getloadavg()
    if proc.returncode != 0:
        save("test_tier", record)
        raise SystemExit(f"bench_board: the board tests failed (pytest exit {proc.returncode}); "
                         "recorded, see the output above")
    return finish(record, args, key="test_tier")


def qemu_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of the board's QEMU so far (load-independent cost)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def save(key: str, record: dict[str, Any]) -> None:
    """Put ``record`` at ``key`` of board.json (``latest`` for the main arch), the old one in
    its history; every other key of the file is kept as it is."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if key == "latest":
        slot = data
    else:
        slot = data.setdefault(key, {})
    history = slot.setdefault("history", [])
    if slot.get("latest"):
        history.append(slot["latest"])
    slot["latest"] = record
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = RESULTS.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp_out, RESULTS)


def finish(record: dict[str, Any], args: argparse.Namespace, key: str | None = None) -> int:
    record["load_after"] = os.getloadavg()
    arch = record.get("arch", MAIN_ARCH)
    if not args.reuse and not args.test_tier:
        cli("board", "down", "--arch", arch)
    save(key or ("latest" if arch == MAIN_ARCH else arch), record)
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
