"""``rvtorch board validate``: the validation suites of ``rvtorch validate``, run on a board.

Same suites, same x86 references and goldens (:func:`rvtorch.validation.ensure_references`),
same per-model runner (:func:`rvtorch.validation.run_model`), same report; only where the target
Python runs changes. :class:`BoardPyEnv` is a :class:`rvtorch.validation.PyEnv` whose commands
run over SSH in the board's venv: the suite's work directory is a local temporary directory
mirrored into a temporary directory on the board (pushed with tar before each command, results
pulled back after it), so the runner reads results exactly where it reads them under QEMU.

The CPU model of a virtual board is the one it was booted with (so the smoke suite expects that
model's OpenBLAS kernel); a real board gets a model made from what it reports (V or not, VLEN).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..targets import CpuModel, Target, matrix
from ..validation import (
    Options,
    PyEnv,
    ensure_references,
    host_env,
    progress,
    run_model,
    summarise,
)
from .install import BoardRef, InstallResult, install, run_probe_script
from .remote import Remote


@dataclass(kw_only=True)
class BoardPyEnv(PyEnv):
    """The venv's Python on a board, reached over SSH (see the module docstring)."""

    remote: Remote | None = None
    dirs: tuple[Path, str] | None = None

    def command(self, argv: Sequence[str], *, cpu: str | None,
                env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        assert self.remote is not None and self.dirs is not None
        hdir, gdir = self.dirs
        full_env = {**self.extra_env, **env}
        ssh = shlex.join(self.remote.ssh_argv("")[:-1])
        q = shlex.quote
        run = q(f"cd {q(gdir)} && env " + " ".join(f"{k}={q(v)}" for k, v in full_env.items())
                + " " + shlex.join([self.python, *argv]))
        push = q(f"mkdir -p {q(gdir)} && cd {q(gdir)} && flock .push tar -xf -")
        pull = q(f"cd {q(gdir)} && tar --exclude=./data --exclude=./rvtorch_validate -cf - .")
        # Push the directory, run, pull the results; the exit status is the command's.
        script = (f"tar -C {q(str(hdir))} -cf - . | {ssh} {push} || exit 255\n"
                  f"{ssh} {run}\nrc=$?\n"
                  f"{ssh} {pull} | tar -C {q(str(hdir))} -xf -\nexit $rc\n")
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "SSH_AUTH_SOCK")}
        return ["sh", "-c", script], keep

    @contextlib.contextmanager
    def workdir(self) -> Iterator[tuple[Path, str]]:
        assert self.remote is not None
        local = Path(tempfile.mkdtemp(prefix="rvtorch-board-"))
        remote_dir = self.remote.run("mktemp -d -t rvtorch-validate.XXXXXX",
                                     what="mktemp on the board").stdout.strip()
        self.dirs = (local, remote_dir)
        try:
            yield local, remote_dir
        finally:
            self.dirs = None
            shutil.rmtree(local, ignore_errors=True)
            with contextlib.suppress(UsageError):
                self.remote.run(f"rm -rf {shlex.quote(remote_dir)}", check=False,
                                what="cleanup")


def board_model(t: Target, cpu: dict[str, Any], vm_cpu: str | None) -> CpuModel:
    """The targets.toml model of a virtual board, or one made from a real board's probe."""
    if vm_cpu is not None:
        return t.cpu_model(vm_cpu)
    vlen = cpu.get("vlen")
    vector = bool(cpu.get("vector"))
    # OpenBLAS's DYNAMIC_ARCH picks the kernel of the widest VLEN it was built for that the
    # core has (ZVL256B on a VLEN 512 core): the vector model with the largest vlen <= VLEN.
    best: CpuModel | None = None
    best_vlen = 0
    if vector and isinstance(vlen, int):
        for model in t.vector_models:
            m = re.search(r"vlen=(\d+)", model.qemu_cpu)
            if m and best_vlen < int(m.group(1)) <= vlen:
                best, best_vlen = model, int(m.group(1))
    base = best or t.scalar_models[0]
    name = f"board-{base.name}" if best else "board"
    return CpuModel(name=name, qemu_cpu="(real board)", vector=vector,
                    openblas_core=base.openblas_core,
                    note=f"real board: {cpu.get('isa') or cpu.get('features') or '?'}")


def validate_on_board(board: BoardRef, t: Target, *, wheel: Path | None, venv: str,
                      suites: tuple[str, ...], report_dir: Path, vm_cpu: str | None,
                      fl_ranks: int = 3, fl_rounds: int = 5) -> dict[str, Any]:
    """Install (if a wheel is given), run the suites on the board, write the report."""
    t0 = time.monotonic()
    installed: InstallResult | None = None
    if wheel is not None:
        installed = install(board, wheel, venv=venv)
        print(installed.summary(), file=sys.stderr)
        venv_path = installed.venv
        cpu = installed.cpu
    else:
        home = board.remote.run("echo $HOME", what="echo $HOME").stdout.strip()
        venv_path = home + venv[1:] if venv.startswith("~") else venv
        probe, _ = run_probe_script(board.remote, f"{venv_path}/bin/python3", torch=True)
        if probe.get("torch", {}).get("import_error"):
            raise UsageError(f"no working torch in {venv_path} on {board.label}",
                             hint="give --wheel to install one first")
        cpu = probe["cpu"]
    opts = Options(arch=t.arch, cpus=(), suites=suites, report=report_dir, wheel=wheel,
                   fl_ranks=fl_ranks, fl_rounds=fl_rounds)
    host = host_env()
    refs = ensure_references(opts, host)
    model = board_model(t, cpu, vm_cpu)
    tenv = BoardPyEnv(name=t.arch, rootfs=None, python=f"{venv_path}/bin/python3",
                      remote=board.remote)
    # "venv" makes the smoke suite check that torch imports from the venv pip filled; an
    # existing venv may see a system torch (--system-site-packages), so only after an install.
    info: dict[str, Any] = {"torch_source": "wheel" if wheel else "board venv",
                            "wheel": wheel.name if wheel else None,
                            "venv": venv_path if wheel else None, "board_venv": venv_path,
                            "board": board.label, "virtual": board.virtual, "cpu": cpu}
    if installed is not None:
        info["install"] = installed.to_json()
    progress(f"{t.arch} on {board.label}: {', '.join(suites)}")
    report: dict[str, Any] = {
        "arch": t.arch, "suites": list(suites), "full": False, "inject": [],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"python": host.python, "rootfs": str(host.rootfs) if host.rootfs else None,
                 "results": refs.results, "timings_s": refs.timings},
        "target": info, "qemu": {"board": board.label},
        "runs": [run_model(opts, tenv, info, model, refs)],
    }
    report["wall_s"] = round(time.monotonic() - t0, 1)
    summarise(report)
    from ..report import write_report

    write_report(report, report_dir)
    return report


def arch_of_board(board: BoardRef, wheel: Path | None, vm_arch: str | None) -> Target:
    if vm_arch:
        return matrix().target(vm_arch)
    if wheel is not None:
        from .install import WheelNeeds

        return matrix().target(WheelNeeds.read(wheel).arch)
    machine = board.remote.run("uname -m", what="uname -m").stdout.strip()
    for t in matrix().targets:
        if t.arch == machine:
            return t
    raise UsageError(f"{board.label} is {machine}, not a target of targets.toml")
