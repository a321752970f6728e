"""The host side of ``rvtorch validate``: references on x86, suites on the target, one report.

Steps (each prints a progress line):

1. **References.** The target-side modules (``rvtorch.validate``, torch + stdlib only) run with
   ``--role host`` in the x86 reference: Debian's amd64 python3-torch in the ``host`` rootfs
   (``ensure_rootfs("host", with_torch=True)``, run natively by chroot), the same torch version
   as Debian's riscv64/arm64 build. They write the smoke goldens, the ReFlow weights/noise/host
   samples and the FL host run (plus the digits shards, exported here with scikit-learn) into
   a reference directory cached by content hash: a rerun reuses it.
2. **Target environment.** Debian's torch in the target rootfs (``--rootfs-torch``), or a wheel
   pip-installed into a clean venv in the base rootfs (python3 only, no Debian torch) from the
   pinned wheelhouse of its dependencies (``rvtorch.wheelhouse``), as a board user installs it.
3. **Suites per CPU model.** The package and references are copied into a guest temp dir; each
   suite runs as ``python3 -m rvtorch_validate.<suite> --role target`` under QEMU with a clean
   guest environment; FL starts one qemu process per rank from here and watches them.
4. **Report.** ``report.json``, ``report.html`` and PNG plots (``rvtorch.report``). Each suite
   on each CPU model is ``passed``, ``failed`` or ``skipped`` (with its reason); the verdict
   (:func:`verdict`) is ``passed`` only if every requested suite ran and passed. A failure is a
   ValidationError (exit 5); a requested suite that could not run, with nothing failed, is a
   UsageError (exit 2): a skip is never a pass (:func:`raise_for_verdict`).

``RVTORCH_VALIDATE_HOST_PYTHON=/path/to/python`` runs the references with that native Python
(which must have torch) instead of the host rootfs: for machines without root or for developing
the suites.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError, ValidationError
from .paths import cache_dir
from .proc import die_with_parent
from .targets import CpuModel, matrix, suggest

SUITES = ("smoke", "reflow", "fl")
# On request only: --suite fastflow-fl, the C++ FL programs on FastFlow + libtorch
# (rvtorch.fastflow_fl, docs/fastflow.md); --suite ops, the op-parity table (validate/ops.py,
# docs/aten-rvv.md): minutes per CPU model under QEMU, which a build's validation cannot spare.
OPTIONAL_SUITES = ("fastflow-fl", "ops")
PACKAGE = "rvtorch_validate"  # name of the copied package inside the guest
HOST_PYTHON_ENV = "RVTORCH_VALIDATE_HOST_PYTHON"
# Faults the checks must catch (tests and `--inject`): each one must end in exit 5.
FAULTS = ("wrong-golden", "wrong-weights", "kill-rank", "hang-rank")
GUEST_PYTHON = "/usr/bin/python3"

# Wall-time limits per suite process under QEMU (generous: 2-core CI under load); a run that
# passes them is killed and reported, never waited on forever.
# One BLAS/OpenMP thread in every suite process: results do not depend on the thread count,
# and on a 2-core machine running 3 FL ranks, spinning pool threads only burn emulated cycles.
SUITE_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
SUITE_TIMEOUT = {"smoke": 900.0, "reflow": 1500.0, "fl": 900.0, "ops": 1500.0}
FULL_TIMEOUT = 4 * 3600.0


@dataclass(frozen=True, kw_only=True)
class Options:
    arch: str
    cpus: tuple[str, ...]
    suites: tuple[str, ...]
    report: Path
    wheel: Path | None = None
    full: bool = False
    inject: tuple[str, ...] = ()
    fl_ranks: int = 3
    fl_rounds: int = 5
    fl_timeout: float = 180.0
    reflow_datasets: tuple[str, ...] = ("8gaussians",)
    # The wheel carries ATen's RVV capability (--aten-rvv on): smoke requires RVV on the vector
    # CPU models and DEFAULT elsewhere, and ops requires the RVV-vs-DEFAULT comparison.
    aten_rvv: bool = False


def progress(msg: str) -> None:
    print(f"[validate] {msg}", file=sys.stderr, flush=True)


def parse_suites(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for s in (x.strip() for x in text.split(",")):
        if not s:
            continue
        if s not in SUITES + OPTIONAL_SUITES:
            raise UsageError(f"unknown suite {s!r}", hint=suggest(s, SUITES + OPTIONAL_SUITES))
        if s not in out:
            out.append(s)
    if not out:
        raise UsageError("no suite selected", hint="--suite " + ",".join(SUITES))
    return tuple(out)


def parse_inject(items: Sequence[str]) -> tuple[str, ...]:
    for f in items:
        if f not in FAULTS:
            raise UsageError(f"unknown fault {f!r}", hint=suggest(f, FAULTS))
    return tuple(items)


# ---------------------------------------------------------------------------------------------
# Where a Python with torch runs


@dataclass(kw_only=True)
class PyEnv:
    """A Python with torch: a rootfs (chroot or QEMU) or a native interpreter on this host."""

    name: str                      # "host" or a targets.toml arch
    rootfs: Path | None            # None: native python on this machine
    python: str = GUEST_PYTHON     # guest path of the interpreter
    extra_env: dict[str, str] = field(default_factory=dict)

    def command(self, argv: Sequence[str], *, cpu: str | None,
                env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        full_env = {**self.extra_env, **env}
        if self.rootfs is None:
            base = {k: v for k, v in os.environ.items()
                    if k in ("PATH", "HOME", "LANG", "TMPDIR")}
            return [self.python, *argv], {**base, **full_env}
        from .emulate import guest_command

        return guest_command(self.name, [self.python, *argv], cpu=cpu, rootfs=self.rootfs,
                             env=full_env)

    @contextlib.contextmanager
    def workdir(self) -> Iterator[tuple[Path, str]]:
        """(host path, guest path) of a fresh directory this Python can read and write."""
        if self.rootfs is None:
            d = Path(tempfile.mkdtemp(prefix="rvtorch-validate-"))
            try:
                yield d, str(d)
            finally:
                shutil.rmtree(d, ignore_errors=True)
            return
        from .emulate import guest_tmpdir

        with guest_tmpdir(self.rootfs, self.name) as pair:
            yield pair


def host_env() -> PyEnv:
    native = os.environ.get(HOST_PYTHON_ENV)
    if native:
        if not Path(native).exists():
            raise UsageError(f"{HOST_PYTHON_ENV}={native} does not exist")
        return PyEnv(name="host", rootfs=None, python=native)
    from .rootfs import ensure_rootfs

    progress("host reference: Debian amd64 python3-torch rootfs")
    return PyEnv(name="host", rootfs=ensure_rootfs("host", with_torch=True))


def package_dir() -> Path:
    return Path(__file__).resolve().parent / "validate"


def copy_package(dest: Path) -> Path:
    """The target-side modules, as ``dest/rvtorch_validate`` (no C++ sources, no caches)."""
    target = dest / PACKAGE
    shutil.copytree(package_dir(), target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "cpp"))
    return target


# ---------------------------------------------------------------------------------------------
# Running one suite process


PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(kw_only=True)
class SuiteRun:
    """What came back from one suite process.

    ``skipped`` is the reason a suite could not run (set by the runner, or by the suite itself
    as a top-level ``"skipped"`` string in its result). A skipped suite is never ``ok``.
    """

    suite: str
    exit: int | None
    wall_s: float
    result: dict[str, Any] | None
    stderr_tail: str = ""
    problem: str = ""
    cpu_s: float = 0.0  # CPU time of the suite's processes: a load-independent cost
    skipped: str = ""

    @property
    def skip_reason(self) -> str:
        return self.skipped or str((self.result or {}).get("skipped") or "")

    @property
    def status(self) -> str:
        if self.problem:
            return FAILED
        if self.skip_reason:
            return SKIPPED
        return PASSED if self.result and self.result.get("ok") else FAILED

    @property
    def ok(self) -> bool:
        return self.status == PASSED

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, "status": self.status, "skip_reason": self.skip_reason,
                "exit": self.exit, "wall_s": round(self.wall_s, 2),
                "cpu_s": round(self.cpu_s, 2),
                "ok": self.ok, "problem": self.problem, "stderr_tail": self.stderr_tail,
                "result": self.result}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_module(pyenv: PyEnv, guest_dir: str, host_dir: Path, suite: str, args: Sequence[str], *,
               cpu: str | None, out_name: str, timeout: float,
               env: Mapping[str, str] | None = None) -> SuiteRun:
    """Run ``python -m rvtorch_validate.<suite> ... --out <out_name>`` and collect its result."""
    argv = ["-m", f"{PACKAGE}.{suite}", *args, "--out", f"{guest_dir}/{out_name}"]
    cmd, genv = pyenv.command(argv, cpu=cpu, env={**SUITE_ENV, "PYTHONPATH": guest_dir,
                                                  **(env or {})})
    t0 = time.monotonic()
    cpu0 = _children_cpu()
    problem = ""
    try:
        proc = subprocess.run(cmd, env=genv, capture_output=True, text=True, timeout=timeout,
                              check=False, preexec_fn=die_with_parent())
        code: int | None = proc.returncode
        stderr = proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = None
        stderr = (exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes)
                  else exc.stderr or "")
        problem = f"{suite} did not finish within {timeout:.0f} s (killed)"
    wall = time.monotonic() - t0
    result = _read_json(host_dir / out_name)
    if not problem and result is None:
        problem = f"{suite} wrote no result (exit {code}): {_tail(stderr, 3)}"
    run = SuiteRun(suite=suite, exit=code, wall_s=wall, result=result,
                   stderr_tail=_tail(stderr), problem=problem, cpu_s=_children_cpu() - cpu0)
    if result is not None:
        result.setdefault("info", {})["openblas_verbose"] = openblas_verbose(stderr)
    return run


CORE_RE = re.compile(r"^Core: (\S+)", re.M)


def openblas_verbose(stderr: str) -> str | None:
    """The kernel OpenBLAS printed with OPENBLAS_VERBOSE=2 (``Core: riscv64_zvl128b``)."""
    m = CORE_RE.search(stderr)
    return m.group(1) if m else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_fl(pyenv: PyEnv, guest_dir: str, host_dir: Path, role: str, opts: Options, *,
           cpu: str | None, tag: str, faults: Sequence[str] = ()) -> SuiteRun:
    """N rank processes started from here (one qemu each), watched until all end or one fails.

    A rank that dies makes the launcher stop the others after a short grace period; a rank
    that hangs makes its peers' collectives time out (``--timeout``), and the launcher's own
    deadline ends whatever is left. Either way the report names the rank.
    """
    port = free_port()
    world = opts.fl_ranks
    procs: list[subprocess.Popen[str]] = []
    logs = []
    t0 = time.monotonic()
    cpu0 = _children_cpu()
    deadline = t0 + (FULL_TIMEOUT if opts.full else SUITE_TIMEOUT["fl"])
    for rank in range(world):
        argv = ["-m", f"{PACKAGE}.fl", "--role", role, "--data", f"{guest_dir}/data",
                "--out", f"{guest_dir}/{tag}fl_rank{rank}.json", "--rank", str(rank),
                "--world", str(world), "--port", str(port),
                "--shards", f"{guest_dir}/data/digits.bin", "--rounds", str(opts.fl_rounds),
                "--timeout", str(opts.fl_timeout)]
        for f in faults:
            argv += ["--fault", f]
        cmd, genv = pyenv.command(argv, cpu=cpu, env={**SUITE_ENV, "PYTHONPATH": guest_dir,
                                                      "TORCH_DISTRIBUTED_USE_LIBUV": "0",
                                                      "GLOO_SOCKET_IFNAME": "lo"})
        log = tempfile.TemporaryFile(mode="w+")
        logs.append(log)
        procs.append(subprocess.Popen(cmd, env=genv, stdout=log, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True))
    problems: list[str] = []
    stopped: list[int] = []  # ranks still running when the launcher gave up: hung
    first_failure: float | None = None
    grace = 15.0
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            break
        now = time.monotonic()
        bad = [r for r, c in enumerate(codes) if c not in (None, 0)]
        if bad and first_failure is None:
            first_failure = now
        if now > deadline or (first_failure is not None and now - first_failure > grace):
            for rank, p in enumerate(procs):
                if p.poll() is None:
                    stopped.append(rank)
                    _kill(p)
            break
        time.sleep(0.5)
    wall = time.monotonic() - t0
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=10)
    ranks: list[dict[str, Any]] = []
    for rank, (p, log) in enumerate(zip(procs, logs, strict=True)):
        log.seek(0)
        text = log.read()
        log.close()
        res = _read_json(host_dir / f"{tag}fl_rank{rank}.json")
        code = p.returncode
        state = "ok"
        if rank in stopped:
            state = "hung: stopped by the launcher"
        elif code is not None and code < 0:
            state = f"killed by signal {-code}"
        elif code not in (0, None):
            state = f"exit {code}"
        if res is None:
            state += ", no result"
        elif not res.get("ok"):
            failed = [c["name"] for c in res.get("checks", []) if not c["ok"]]
            state += f", failed {','.join(failed)}"
        if state != "ok":
            problems.append(f"rank {rank}: {state}")
        ranks.append({"rank": rank, "exit": code, "state": state, "result": res,
                      "log_tail": _tail(text)})
    # The root cause first: a rank that died or hung, then the peers that failed because of it.
    problems.sort(key=lambda p: 0 if ("signal" in p or "hung" in p) else 1)
    if wall >= (deadline - t0):
        problems.insert(0, f"FL did not finish within {deadline - t0:.0f} s")
    main: dict[str, Any] | None = ranks[0]["result"]
    problem = "; ".join(problems)
    run = SuiteRun(suite="fl", exit=procs[0].returncode, wall_s=wall, result=main,
                   stderr_tail=str(ranks[0]["log_tail"]), problem=problem,
                   cpu_s=_children_cpu() - cpu0)
    if main is not None:
        main.setdefault("info", {})["ranks"] = [
            {k: v for k, v in r.items() if k != "result"} for r in ranks]
    return run


def _kill(p: subprocess.Popen[str]) -> None:
    # Each rank runs in its own session: kill its whole group (qemu or chroot + python).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, 9)


# ---------------------------------------------------------------------------------------------
# References (host role), cached by content hash


def reference_key(suite: str, opts: Options, host: PyEnv) -> str:
    """Content hash of what one suite's references depend on: its module, common.py, the
    suite's parameters and the x86 reference it was computed with."""
    h = hashlib.sha256()
    for name in ("common.py", f"{suite}.py"):
        h.update((package_dir() / name).read_bytes())
    params: dict[str, Any] = {"host": str(host.rootfs or host.python),
                              "torch": _manifest_torch(host.rootfs)}
    if suite == "reflow":
        params["datasets"] = opts.reflow_datasets
    if suite == "fl":
        params.update(ranks=opts.fl_ranks, rounds=opts.fl_rounds, timeout=opts.fl_timeout)
    if suite == "ops":
        params["full"] = opts.full
    h.update(json.dumps(params, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _manifest_torch(rootfs: Path | None) -> str | None:
    if rootfs is None:
        return None
    data = _read_json(rootfs.with_name(rootfs.name + ".json"))
    return None if data is None else str(data.get("torch"))


@dataclass(kw_only=True)
class References:
    """Per suite: the cached directory of its reference files and the host's own result."""

    dirs: dict[str, Path]
    results: dict[str, Any]
    timings: dict[str, float]

    def copy_to(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for d in self.dirs.values():
            for f in (d / "data").iterdir():
                shutil.copy2(f, dest / f.name)


def ensure_references(opts: Options, host: PyEnv) -> References:
    """Each selected suite's x86 references, made once per content hash and then reused.

    A suite's references live in ``<cache>/validation/<suite>-<hash>/`` (``data/`` for the
    target, ``host_result.json``); made in a temp dir and renamed, so a killed run leaves
    nothing half-written and a rerun starts that suite again.
    """
    root = cache_dir() / "validation"
    root.mkdir(parents=True, exist_ok=True)
    refs = References(dirs={}, results={}, timings={})
    for suite in opts.suites:
        final = root / f"{suite}-{reference_key(suite, opts, host)}"
        if not (final / "host_result.json").exists():
            make_reference(suite, opts, host, final)
        else:
            progress(f"references: {suite} reused ({final.name})")
        meta = _read_json(final / "host_result.json") or {}
        refs.dirs[suite] = final
        refs.results[suite] = meta.get("result")
        refs.timings[suite] = meta.get("wall_s", 0.0)
    return refs


def make_reference(suite: str, opts: Options, host: PyEnv, final: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
    try:
        with host.workdir() as (hdir, gdir):
            copy_package(hdir)
            (hdir / "data").mkdir()
            progress(f"references: {suite} on the x86 reference")
            if suite == "fl":
                from .digits import ensure_shards

                shards = ensure_shards(opts.fl_ranks, seed=0, alpha=0.5)
                shutil.copy2(shards, hdir / "data" / "digits.bin")
                run = run_fl(host, gdir, hdir, "host", opts, cpu=None, tag="host_")
            else:
                args = ["--role", "host", "--data", f"{gdir}/data"]
                if suite == "reflow":
                    # One thread: these small ops gain nothing from more, and OpenBLAS/OpenMP
                    # threads spinning on a loaded 2-core machine cost a lot.
                    args += ["--datasets", ",".join(opts.reflow_datasets)]
                if suite == "ops" and opts.full:
                    args.append("--full")
                run = run_module(host, gdir, hdir, suite, args, cpu=None,
                                 out_name=f"{suite}_host.json", timeout=3600.0)
            if not run.ok:
                raise ValidationError(
                    f"the x86 reference failed its own {suite} suite: "
                    f"{run.problem or _failed(run.result)}",
                    hint="the host torch is broken or the suite's thresholds are off")
            shutil.copytree(hdir / "data", tmp / "data")
        (tmp / "host_result.json").write_text(json.dumps(
            {"result": run.result, "wall_s": round(run.wall_s, 2), "cpu_s": round(run.cpu_s, 2),
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _failed(result: dict[str, Any] | None) -> str:
    if not result:
        return "no result"
    return ", ".join(c["name"] for c in result.get("checks", []) if not c["ok"]) or "?"


# ---------------------------------------------------------------------------------------------
# Target environment


@contextlib.contextmanager
def target_env(opts: Options) -> Iterator[tuple[PyEnv, dict[str, Any]]]:
    """Debian's torch in the target rootfs, or the wheel in a clean venv in the base rootfs.

    The wheel's rootfs is the base one (Debian's python3 only): no python3-torch, no numpy,
    nothing on the venv's path but what pip installed from the wheelhouse, so an import that
    works here works on a board that installed the wheel the same way.
    """
    from .emulate import pinned_mode
    from .rootfs import ensure_rootfs

    # The rootfs first (making one may register a binfmt entry), then the emulation mode is
    # fixed for the whole run: another process toggling binfmt cannot switch it midway.
    if opts.wheel is None:
        progress(f"{opts.arch}: target rootfs with Debian's python3-torch")
        rootfs = ensure_rootfs(opts.arch, with_torch=True)
        with pinned_mode(opts.arch, rootfs):
            yield PyEnv(name=opts.arch, rootfs=rootfs), {
                "rootfs": str(rootfs), "rootfs_torch": _manifest_torch(rootfs),
                "torch_source": "rootfs"}
        return
    from .wheelhouse import install_in_rootfs

    rootfs = ensure_rootfs(opts.arch, with_torch=False)
    info: dict[str, Any] = {"rootfs": str(rootfs), "rootfs_torch": _manifest_torch(rootfs),
                            "torch_source": "wheel", "wheel": opts.wheel.name}
    with pinned_mode(opts.arch, rootfs), \
            PyEnv(name=opts.arch, rootfs=rootfs).workdir() as (hdir, gdir):
        progress(f"{opts.arch}: pip installs {opts.wheel.name} into a clean venv "
                 "(base rootfs, wheelhouse, --no-index)")
        inst = install_in_rootfs(opts.arch, rootfs, opts.wheel, (hdir, gdir))
        progress(f"{opts.arch}: installed {len(inst.packages)} distributions in "
                 f"{inst.seconds:.0f} s")
        info.update(inst.to_json())
        yield PyEnv(name=opts.arch, rootfs=rootfs, python=inst.python_guest), info


# ---------------------------------------------------------------------------------------------
# The whole run


def cpu_models(arch: str, names: Sequence[str]) -> list[CpuModel]:
    t = matrix().target(arch)
    return [t.cpu_model(n) for n in names] if names else list(t.cpu)


def expected_version(info: dict[str, Any], wheel: Path | None) -> str:
    if wheel is not None:
        parts = wheel.name.split("-")
        return parts[1].split("+")[0] if len(parts) > 1 else ""
    return str(info.get("rootfs_torch") or "").split("+")[0]


def target_args(suite: str, opts: Options, model: CpuModel | None, gdir: str,
                info: dict[str, Any], venv: str | None) -> list[str]:
    args = ["--role", "target", "--data", f"{gdir}/data"]
    if suite == "smoke":
        args.append("--require-distributed")
        if model is not None:
            args += ["--expect-blas-core", model.openblas_core]
        ver = expected_version(info, opts.wheel)
        if ver:
            args += ["--expect-version", ver]
        if venv:
            args += ["--expect-torch-prefix", venv]
        if opts.aten_rvv and model is not None:
            args += ["--expect-cpu-capability", expected_capability(model)]
    if suite == "reflow":
        args += ["--datasets", ",".join(opts.reflow_datasets)]
        if opts.full:
            args.append("--full")
    if suite == "ops" and opts.full:
        args.append("--full")
    if suite == "ops" and opts.aten_rvv and model is not None and model.vector:
        args.append("--require-capability-parity")
    return args


def expected_capability(model: CpuModel) -> str:
    """The ATen capability a wheel with the RVV capability must choose on ``model``: RVV where
    the model has the V extension (1.0), DEFAULT elsewhere (never SIGILL)."""
    return "RVV" if model.vector else "DEFAULT"


def suites_for(aten_rvv: bool) -> tuple[str, ...]:
    """What a build validates: the default suites, plus the op-parity table for a wheel with
    ATen's RVV capability (its RVV kernels against DEFAULT and the x86 golden)."""
    return SUITES + (("ops",) if aten_rvv else ())


def apply_injections(opts: Options, data: Path) -> None:
    """Break the references on purpose (``--inject``): the target run must then fail."""
    if "wrong-golden" in opts.inject:
        path = data / "smoke_golden.json"
        golden = json.loads(path.read_text())
        out = golden["ops"]["matmul_f32"]["output"]["data"]
        out[0] = out[0] + 0.5
        path.write_text(json.dumps(golden))
    if "wrong-weights" in opts.inject:
        for name in opts.reflow_datasets:
            shutil.copy2(data / f"reflow_{name}_teacher.pt", data / f"reflow_{name}_student.pt")


def vector_qemu(opts: Options, models: Sequence[CpuModel]) -> dict[str, Any] | None:
    """The QEMU that runs a wheel with ATen's RVV capability on the vector CPU models: 10.0,
    built from Debian trixie's pinned source (rvtorch.tcg_count, the binary the instruction
    counts use). Debian 12's qemu-user 7.2 cannot: it has no riscv_hwprobe, and it aborts in
    its RVV translator (decode_save_opc assertion) on vector code GCC 14 emits for the generic
    int8 kernels. None for any other validation (the host's QEMU, the faster one)."""
    if not opts.aten_rvv or opts.arch != "riscv64" or not any(m.vector for m in models):
        return None
    from .tcg_count import ensure_qemu, qemu_version

    progress("RVV capability: the vector CPU models run under QEMU 10 (Debian's source)")
    binary, record = ensure_qemu()
    return {"binary": str(binary), "version": qemu_version(binary),
            "debian_version": record.get("debian_version")}


def validate(opts: Options) -> dict[str, Any]:
    """Run everything; returns the report dict (also written to ``opts.report``)."""
    t_start = time.monotonic()
    models = cpu_models(opts.arch, opts.cpus)
    host = host_env()
    refs = ensure_references(opts, host)
    report: dict[str, Any] = {
        "arch": opts.arch, "suites": list(opts.suites), "full": opts.full,
        "inject": list(opts.inject), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                               time.gmtime()),
        "host": {"python": host.python, "rootfs": str(host.rootfs) if host.rootfs else None,
                 "torch": _manifest_torch(host.rootfs), "results": refs.results,
                 "timings_s": refs.timings},
        "runs": [],
    }
    from .emulate import explicit_mode

    rvv_qemu = vector_qemu(opts, models)
    # Models that need different QEMUs run explicitly (a binfmt entry names one for all).
    with explicit_mode(rvv_qemu is not None), target_env(opts) as (tenv, info):
        report["target"] = info
        report["qemu"] = _qemu_info(opts.arch, tenv.rootfs)
        if rvv_qemu is not None:
            report["qemu"]["vector_models"] = rvv_qemu
        for model in models:
            from .emulate import qemu_override

            binary = rvv_qemu["binary"] if rvv_qemu is not None and model.vector else None
            with qemu_override(opts.arch, binary):
                report["runs"].append(run_model(opts, tenv, info, model, refs))
        report["vector_scan"] = vector_scan(opts.arch, tenv, report["runs"], opts.full)
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    summarise(report)
    from .report import write_report

    write_report(report, opts.report)
    return report


def run_model(opts: Options, tenv: PyEnv, info: dict[str, Any], model: CpuModel | None,
              refs: References) -> dict[str, Any]:
    """Every selected suite in ``tenv`` on one CPU model (``None``: natively, the x86 host)."""
    label = model.name if model else "x86-native"
    entry: dict[str, Any] = {"cpu": label, "qemu_cpu": model.qemu_cpu if model else None,
                             "vector": model.vector if model else None,
                             "expected_blas_core": model.openblas_core if model else None,
                             "suites": {}}
    venv = info.get("venv")
    cpu = model.name if model else None
    with tenv.workdir() as (hdir, gdir):
        copy_package(hdir)
        refs.copy_to(hdir / "data")
        apply_injections(opts, hdir / "data")
        for suite in opts.suites:
            progress(f"{opts.arch} {label}: {suite} ...")
            if suite == "fastflow-fl":
                from .fastflow_fl import suite_run

                run = suite_run(opts.arch, cpu=cpu)
            elif suite == "ops":
                run = run_ops(tenv, gdir, hdir, target_args(suite, opts, model, gdir, info, venv),
                              cpu=cpu, timeout=FULL_TIMEOUT if opts.full else SUITE_TIMEOUT[suite])
            elif suite == "fl":
                faults = []
                if "kill-rank" in opts.inject:
                    faults.append("kill@1:1")
                if "hang-rank" in opts.inject:
                    faults.append("hang@2:1")
                run = run_fl(tenv, gdir, hdir, "target", opts, cpu=cpu, tag="", faults=faults)
            else:
                limit = FULL_TIMEOUT if opts.full else SUITE_TIMEOUT[suite]
                run = run_module(tenv, gdir, hdir, suite,
                                 target_args(suite, opts, model, gdir, info, venv),
                                 cpu=cpu, out_name=f"{suite}.json", timeout=limit,
                                 env={"OPENBLAS_VERBOSE": "2"} if suite == "smoke" else None)
            if run.status == SKIPPED:
                said = f"SKIPPED ({run.skip_reason})"
            else:
                said = "ok" if run.ok else "FAIL " + (run.problem or _failed(run.result))
                said += "".join(f", {c['name']} SKIPPED ({c['reason']})"
                                for c in _skipped_checks(run.result))
            progress(f"{opts.arch} {label}: {suite} {said} ({run.wall_s:.1f} s, "
                     f"CPU {run.cpu_s:.1f} s)")
            entry["suites"][suite] = run.to_json()
    return entry


OPS_OUTPUTS = "ops_outputs.json"
OPS_NEEDS_DEFAULT = "needs a DEFAULT run"


def run_ops(tenv: PyEnv, gdir: str, hdir: Path, args: Sequence[str], *, cpu: str | None,
            timeout: float) -> SuiteRun:
    """The op-parity suite: against the x86 golden, then, if torch chose a capability other
    than DEFAULT, the same table in a second process with ``ATEN_CPU_CAPABILITY=default``
    against the first one's values. Started from here, not by the suite: under ``qemu -L`` a
    guest's child would be a host program (rvtorch.emulate)."""
    run = run_module(tenv, gdir, hdir, "ops", [*args, "--outputs", f"{gdir}/{OPS_OUTPUTS}"],
                     cpu=cpu, out_name="ops.json", timeout=timeout)
    parity = (((run.result or {}).get("info") or {}).get("capability_parity") or {})
    if run.problem or parity.get("status") != OPS_NEEDS_DEFAULT:
        return run
    progress(f"ops: {parity.get('chosen')} chosen; the table again with "
             "ATEN_CPU_CAPABILITY=default")
    default = run_module(tenv, gdir, hdir, "ops", [*args, "--against", f"{gdir}/{OPS_OUTPUTS}"],
                         cpu=cpu, out_name="ops_default.json", timeout=timeout,
                         env={"ATEN_CPU_CAPABILITY": "default"})
    return merge_capability_run(run, default)


def merge_capability_run(run: SuiteRun, default: SuiteRun) -> SuiteRun:
    """One ops result: the chosen capability's checks and the DEFAULT process's ones."""
    assert run.result is not None
    res = run.result
    dres = default.result or {}
    res["checks"] = list(res.get("checks", [])) + list(dres.get("checks", []))
    res["ok"] = bool(res.get("ok")) and default.ok
    info = res.setdefault("info", {})
    info["capability_parity"] = {
        "status": default.status, "chosen": info.get("cpu_capability"),
        "default_capability": (dres.get("info") or {}).get("cpu_capability"),
        "wall_s": round(default.wall_s, 2), "cpu_s": round(default.cpu_s, 2),
        "exit": default.exit, "problem": default.problem, "timings": dres.get("timings")}
    run.wall_s += default.wall_s
    run.cpu_s += default.cpu_s
    if default.problem:
        run.problem = "; ".join(p for p in (run.problem, f"DEFAULT run: {default.problem}") if p)
    return run


def _skipped_checks(result: dict[str, Any] | None) -> list[dict[str, str]]:
    """Checks a suite could not make (``info.skipped_checks``): listed, never a pass."""
    return list(((result or {}).get("info") or {}).get("skipped_checks") or [])


def _qemu_info(arch: str, rootfs: Path | None) -> dict[str, Any]:
    from .emulate import mode_for, qemu_binary, qemu_version, resolve

    t = resolve(arch)
    if t is None:
        return {}
    binary = qemu_binary(t)
    return {"binary": binary, "version": qemu_version(binary), "mode": mode_for(arch, rootfs)}


def summarise(report: dict[str, Any]) -> None:
    """Failures, skips and the verdict of a report (``ok`` only if it is ``passed``)."""
    failures: list[str] = []
    skipped: list[str] = []
    skipped_checks: list[str] = []
    total = 0
    for run in report["runs"]:
        for suite, s in run["suites"].items():
            where = f"{report['arch']}/{run['cpu']}/{suite}"
            status = s.get("status") or (PASSED if s.get("ok") else FAILED)
            if status == SKIPPED:
                skipped.append(f"{where}: skipped: {s.get('skip_reason') or '?'}")
            skipped_checks += [f"{where}: {c['name']}: skipped: {c['reason']}"
                               for c in _skipped_checks(s.get("result"))]
            if s["problem"]:
                failures.append(f"{where}: {s['problem']}")
            for c in (s.get("result") or {}).get("checks", []):
                total += 1
                if not c["ok"]:
                    failures.append(f"{where}: {c['name']}" + (f" ({c['detail']})"
                                                              if c.get("detail") else ""))
            if not s["result"] and not s["problem"] and status != SKIPPED:
                failures.append(f"{where}: no result")
            elif status == FAILED and not s["problem"] and not any(
                    f.startswith(f"{where}: ") for f in failures):
                failures.append(f"{where}: failed")
    report["checks_total"] = total
    report["failures"] = failures
    report["skipped"] = skipped
    # A check a suite could not make (ops: no second CPU capability): not a pass, and not a
    # failure of what was asked; listed in the report.
    report["skipped_checks"] = skipped_checks
    report["verdict"] = verdict(failures, skipped, total)
    report["ok"] = report["verdict"] == PASSED


def verdict(failures: Sequence[str], skipped: Sequence[str], total: int) -> str:
    """``failed`` if anything failed, else ``skipped`` if a requested suite did not run (or no
    check ran at all), else ``passed``."""
    if failures:
        return FAILED
    if skipped or total == 0:
        return SKIPPED
    return PASSED


def summary_record(report: dict[str, Any], report_path: str) -> dict[str, Any]:
    """What a build records about a wheel's validation (build-info ``validation``)."""
    suites: dict[str, dict[str, str]] = {}
    kernels: dict[str, Any] = {}
    for run in report["runs"]:
        suites[run["cpu"]] = {name: s.get("status", "") for name, s in run["suites"].items()}
        blas = (((run["suites"].get("smoke") or {}).get("result") or {}).get("info") or {}).get(
            "blas") or {}
        kernels[run["cpu"]] = {"expected": run.get("expected_blas_core"),
                               "seen": blas.get("corename")}
    return {"status": report["verdict"], "checks_total": report["checks_total"],
            "failures": report["failures"][:20], "skipped": report.get("skipped", []),
            "suites": suites, "openblas_kernels": kernels, "report": report_path,
            "emulation": (report.get("qemu") or {}).get("mode"),
            "installed": (report.get("target") or {}).get("packages")}


def raise_for_verdict(report: dict[str, Any], where: Path) -> None:
    """ValidationError (exit 5) for a failed report, UsageError (exit 2) for one where a
    requested suite could not run; nothing for a passed one."""
    v = report.get("verdict")
    arch = report.get("arch")
    if v == PASSED:
        return
    if v == FAILED:
        raise ValidationError(
            f"{len(report['failures'])} check(s) failed on {arch}, first: "
            f"{report['failures'][0]}", hint=f"see {where / 'report.html'}")
    first = (report.get("skipped") or ["no check ran"])[0]
    raise UsageError(f"{len(report.get('skipped') or [])} requested suite run(s) could not run "
                     f"on {arch}, first: {first}", hint=f"see {where / 'report.html'}")


# ---------------------------------------------------------------------------------------------
# Vector instructions in the binaries


SVE_OPERAND = re.compile(r"\bz\d+\.[bhsdq]\b|\bp\d+/[mz]\b")


def vector_scan(arch: str, tenv: PyEnv, runs: list[dict[str, Any]], full: bool) -> dict[str, Any]:
    """Count vector instructions (RVV on riscv64, SVE on aarch64) in the libraries torch loaded.

    The BLAS library (and SLEEF) is where vector kernels live in Debian's build; libtorch_cpu
    is scanned only with --full (objdump over ~190 MB takes minutes).
    """
    t = matrix().target(arch)
    objdump = shutil.which(f"{t.triple}-objdump")
    if objdump is None:
        return {"skipped": f"{t.triple}-objdump not found (apt-get install binutils-{t.triple})"}
    libs: list[str] = []
    for run in runs:
        smoke = run["suites"].get("smoke", {}).get("result") or {}
        for path in (smoke.get("info", {}).get("mapped_libraries") or []):
            base = os.path.basename(path)
            wanted = any(k in base for k in ("blas", "sleef", "lapack"))
            if (wanted or (full and "torch_cpu" in base)) and path not in libs:
                libs.append(path)
    out: dict[str, Any] = {"objdump": objdump, "libraries": {}}
    for guest_path in libs:
        host_path = _host_path(tenv, guest_path)
        if host_path is None:
            continue
        progress(f"{arch}: counting vector instructions in {os.path.basename(guest_path)}")
        out["libraries"][guest_path] = count_vector(objdump, host_path, arch)
    out["any_vector"] = any(v.get("vector", 0) > 0 for v in out["libraries"].values())
    return out


def _host_path(tenv: PyEnv, path: str) -> Path | None:
    p = Path(path)
    if tenv.rootfs is None or str(p).startswith(str(tenv.rootfs)):
        return p if p.exists() else None
    from .emulate import resolve_in_rootfs

    hp = resolve_in_rootfs(tenv.rootfs, path)
    return hp if hp.exists() else None


def count_vector(objdump: str, lib: Path, arch: str) -> dict[str, Any]:
    if arch == "riscv64":
        from .rvv_count import count

        return count(str(lib), objdump)
    proc = subprocess.Popen([objdump, "-d", "--no-show-raw-insn", str(lib)],
                            stdout=subprocess.PIPE, text=True, errors="replace")
    assert proc.stdout is not None
    total = vector = 0
    for line in proc.stdout:
        if ":\t" not in line:
            continue
        total += 1
        vector += bool(SVE_OPERAND.search(line))
    proc.wait()
    return {"instructions": total, "vector": vector, "kind": "SVE"}
