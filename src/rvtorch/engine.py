"""Container engines (docker, podman, buildah) behind one interface.

``detect_engine()`` picks the first engine that works on this machine, in the order docker,
podman, buildah; ``--engine``/``RVTORCH_ENGINE`` forces one. "Works" is probed, not assumed:

* docker counts only when its daemon answers (a client without a daemon is common);
* podman counts only when it can run a container (rootless or capability-limited hosts fail in
  crun; building alone is what buildah is for);
* buildah needs no daemon and runs commands with ``--isolation chroot``, so it counts whenever it
  is installed.

Every command is echoed (``+ cmd``) by :mod:`rvtorch.proc`. Containers are used through
:meth:`Engine.container`, a context manager that always removes the container on exit, also
when starting it failed (``RVTORCH_KEEP_CONTAINER=1`` keeps it for a post-mortem).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BuildError, UsageError
from .proc import echo, run

ENGINES = ("docker", "podman", "buildah")
INSTALL_HINT = (
    "install one: `apt-get install buildah` (no daemon needed), podman, or docker with a "
    "running daemon; or force one with --engine/RVTORCH_ENGINE"
)
PROBE_TIMEOUT = 20.0
# Containers are named rvtorch-<owner pid>-<random>: a later run can tell leftovers of a killed
# process from containers another live process is using.
CONTAINER_PREFIX = "rvtorch-"
STALE_RE = re.compile(r"^rvtorch-(\d+)-[0-9a-f]{8}$")


def _container_name() -> str:
    return f"{CONTAINER_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def keep_container() -> bool:
    return os.environ.get("RVTORCH_KEEP_CONTAINER", "") not in ("", "0")


@dataclass(frozen=True)
class Probe:
    """What an engine can do on this machine, and why not if it cannot."""

    name: str
    path: str | None
    can_build: bool
    can_run: bool
    reason: str = ""


def _quiet(cmd: Sequence[str], timeout: float = PROBE_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(list(cmd), 1, "", str(exc))


def _run_logged(
    argv: Sequence[str],
    *,
    what: str,
    check: bool = True,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    error: type[BuildError] | type[UsageError] = BuildError,
) -> subprocess.CompletedProcess[str]:
    """Run an engine command whose output is progress, not a result: echoed, and its stdout sent
    to our stderr so that rvtorch's stdout carries only results (image references)."""
    echo(argv)
    try:
        proc = subprocess.run(list(argv), stdout=sys.stderr, text=True, timeout=timeout,
                              env=dict(env) if env is not None else None, check=False)
    except FileNotFoundError as exc:
        raise UsageError(f"{argv[0]} not found", hint=INSTALL_HINT) from exc
    except subprocess.TimeoutExpired as exc:
        raise error(f"{what} timed out after {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        raise error(f"{what} failed (exit {proc.returncode})")
    return proc


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"


def probe(name: str) -> Probe:
    """Find out whether ``name`` is installed, can build images and can run containers."""
    path = shutil.which(name)
    if path is None:
        return Probe(name, None, False, False, f"{name} not found on PATH")
    if name == "docker":
        r = _quiet([path, "version", "--format", "{{.Server.Version}}"])
        if r.returncode != 0 or not r.stdout.strip():
            return Probe(name, path, False, False, "docker daemon not reachable: " + _last_line(
                r.stderr or r.stdout))
        return Probe(name, path, True, True)
    if name == "podman":
        r = _quiet([path, "info", "--format", "{{.Host.OCIRuntime.Name}}"])
        if r.returncode != 0:
            return Probe(name, path, False, False, "podman info failed: " + _last_line(r.stderr))
        # Runs the host's own root read-only as the container rootfs: needs no image and fails
        # exactly where crun cannot start containers (e.g. no CAP_SYS_RESOURCE for rlimits).
        r = _quiet([path, "run", "--rm", "--network=none", "--rootfs", "/", "true"])
        if r.returncode != 0:
            return Probe(name, path, True, False, "podman cannot run containers here: "
                         + _last_line(r.stderr))
        return Probe(name, path, True, True)
    if name == "buildah":
        r = _quiet([path, "version"])
        if r.returncode != 0:
            return Probe(name, path, False, False, "buildah version failed: "
                         + _last_line(r.stderr))
        return Probe(name, path, True, True)
    raise UsageError(f"unknown container engine {name!r}", hint="valid: " + ", ".join(ENGINES))


def detect_engine(force: str | None = None, *, need_run: bool = True) -> Engine:
    """The engine to use: ``force`` (or ``$RVTORCH_ENGINE``) if given, else the first that works.

    ``need_run`` (the default) also requires that the engine can run containers; builds alone
    could use a podman that cannot run, but every image build here is followed by its self-test.
    """
    choice = force or os.environ.get("RVTORCH_ENGINE") or None
    if choice:
        if choice not in ENGINES:
            from .targets import suggest

            raise UsageError(f"unknown container engine {choice!r}", hint=suggest(choice, ENGINES))
        p = probe(choice)
        if not p.can_build or (need_run and not p.can_run):
            usable = [n for n in ENGINES if n != choice and _usable(probe(n), need_run)]
            hint = f"use --engine {usable[0]}, which works here" if usable else INSTALL_HINT
            raise UsageError(f"container engine {choice} is not usable: {p.reason}", hint=hint)
        return make_engine(p)
    reasons = []
    for name in ENGINES:
        p = probe(name)
        if _usable(p, need_run):
            return make_engine(p)
        reasons.append(p.reason)
    raise UsageError("no usable container engine (" + "; ".join(reasons) + ")", hint=INSTALL_HINT)


def _usable(p: Probe, need_run: bool) -> bool:
    return p.can_build and (p.can_run or not need_run)


def make_engine(p: Probe) -> Engine:
    assert p.path is not None
    cls: type[Engine] = {"docker": Docker, "podman": Podman, "buildah": Buildah}[p.name]
    return cls(p.path)


@dataclass
class Container:
    """A started container; ``call`` runs one command in it (echoed)."""

    engine: Engine
    handle: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None

    def call(
        self,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        capture: bool = False,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**self.env, **(env or {})}
        argv = self.engine.exec_argv(self.handle, list(cmd), full_env, cwd or self.workdir)
        what = f"`{' '.join(cmd[:3])}` in container"
        if capture:
            return run(argv, capture=True, check=check, timeout=timeout, what=what)
        return _run_logged(argv, check=check, timeout=timeout, what=what)


class Engine:
    """One container engine. Subclasses fill in the command lines."""

    name = "engine"

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    # -- images ---------------------------------------------------------------------------
    def build_argv(
        self,
        dockerfile: Path,
        context: Path,
        tag: str,
        build_args: Mapping[str, str],
        target: str | None,
        labels: Mapping[str, str],
        no_cache: bool,
    ) -> list[str]:
        argv = [self.path, "build", "-f", str(dockerfile), "-t", tag]
        for k, v in build_args.items():
            argv += ["--build-arg", f"{k}={v}"]
        for k, v in labels.items():
            argv += ["--label", f"{k}={v}"]
        if target:
            argv += ["--target", target]
        if no_cache:
            argv.append("--no-cache")
        return [*argv, str(context)]

    def build(
        self,
        dockerfile: Path,
        context: Path,
        tag: str,
        *,
        build_args: Mapping[str, str] | None = None,
        target: str | None = None,
        labels: Mapping[str, str] | None = None,
        no_cache: bool = False,
    ) -> None:
        argv = self.build_argv(dockerfile, context, tag, dict(build_args or {}), target,
                               dict(labels or {}), no_cache)
        _run_logged(argv, what=f"{self.name} build of {tag}")

    def image_exists(self, ref: str) -> bool:
        return _quiet([self.path, "image", "inspect", ref]).returncode == 0

    def image_id(self, ref: str) -> str | None:
        r = _quiet([self.path, "image", "inspect", "--format", "{{.Id}}", ref])
        return r.stdout.strip() or None if r.returncode == 0 else None

    def image_labels(self, ref: str) -> dict[str, str]:
        import json

        r = _quiet([self.path, "image", "inspect", "--format", "{{json .Config.Labels}}", ref])
        if r.returncode != 0 or not r.stdout.strip() or r.stdout.strip() == "null":
            return {}
        return dict(json.loads(r.stdout))

    def tag(self, ref: str, new_ref: str) -> None:
        _run_logged([self.path, "tag", ref, new_ref], what=f"tag {new_ref}")

    def remove_image(self, ref: str) -> None:
        """Remove a tag (the image goes when no tag is left); a missing ref is not an error."""
        if self.image_exists(ref):
            run([self.path, "rmi", ref], check=False, capture=True)

    def list_images_argv(self) -> list[str]:
        return [self.path, "images", "--format", "{{.Repository}}:{{.Tag}}"]

    def list_images(self) -> list[str]:
        """Every tagged image reference (``name:tag``)."""
        r = _quiet(self.list_images_argv(), timeout=120)
        return [x for x in r.stdout.split() if x and not x.endswith(":<none>")]

    def pull(self, ref: str) -> None:
        _run_logged([self.path, "pull", ref], error=UsageError, what=f"pull {ref}")

    def import_tarball(self, tarball: Path, ref: str,
                       labels: Mapping[str, str] | None = None) -> None:
        """Make image ``ref`` from a root filesystem tarball (the offline base image)."""
        argv = [self.path, "import"]
        for k, v in (labels or {}).items():
            argv += ["--change", f"LABEL {k}={v}"]
        _run_logged([*argv, "--change", "CMD /bin/bash", str(tarball), ref],
                    what=f"import {ref}")

    # -- containers -----------------------------------------------------------------------
    def exec_argv(
        self, handle: str, cmd: list[str], env: Mapping[str, str], cwd: str | None
    ) -> list[str]:
        argv = [self.path, "exec"]
        for k, v in env.items():
            argv += ["-e", f"{k}={v}"]
        if cwd:
            argv += ["-w", cwd]
        return [*argv, handle, *cmd]

    def start_argv(self, image: str, name: str, mounts: Mapping[str, str]) -> list[str]:
        argv = [self.path, "run", "-d", "--name", name, "--entrypoint", "sleep"]
        for host, ctr in mounts.items():
            argv += ["-v", f"{host}:{ctr}"]
        return [*argv, image, "infinity"]

    def start(self, image: str, name: str, mounts: Mapping[str, str]) -> str:
        run(self.start_argv(image, name, mounts), capture=True,
            what=f"start a {self.name} container from {image}")
        return name

    def remove_argv(self, handle: str) -> list[str]:
        return [self.path, "rm", "-f", handle]

    def list_containers_argv(self) -> list[str]:
        return [self.path, "ps", "-a", "--format", "{{.Names}}"]

    def remove_stale_containers(self) -> list[str]:
        """Remove containers of rvtorch processes that died without cleaning up (SIGKILL, power
        loss). The owner's pid is in the name; containers of live processes are left alone."""
        r = _quiet(self.list_containers_argv())
        removed = []
        for name in r.stdout.split() if r.returncode == 0 else []:
            m = STALE_RE.match(name)
            if not m or _pid_alive(int(m.group(1))):
                continue
            argv = self.remove_argv(name)
            echo(argv)
            if _quiet(argv, timeout=120).returncode == 0:
                removed.append(name)
        return removed

    @contextlib.contextmanager
    def container(
        self,
        image: str,
        mounts: Mapping[str, str | os.PathLike[str]] | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> Iterator[Container]:
        """A container from ``image`` with ``mounts`` {host path: container path}; removed on exit
        (even when starting it failed) unless RVTORCH_KEEP_CONTAINER=1."""
        self.remove_stale_containers()
        name = _container_name()
        str_mounts = {str(Path(h).resolve()): str(c) for h, c in (mounts or {}).items()}
        handle = name
        try:
            handle = self.start(image, name, str_mounts)
            yield Container(self, handle, dict(env or {}), workdir)
        finally:
            if keep_container():
                print(f"rvtorch: keeping container {handle} (RVTORCH_KEEP_CONTAINER)",
                      file=sys.stderr)
            else:
                argv = self.remove_argv(handle)
                echo(argv)
                _quiet(argv, timeout=120)


class Docker(Engine):
    name = "docker"


class Podman(Engine):
    name = "podman"

    def build_argv(
        self,
        dockerfile: Path,
        context: Path,
        tag: str,
        build_args: Mapping[str, str],
        target: str | None,
        labels: Mapping[str, str],
        no_cache: bool,
    ) -> list[str]:
        argv = super().build_argv(dockerfile, context, tag, build_args, target, labels, no_cache)
        # Like buildah (podman builds with it): the OCI format would drop the Dockerfile's SHELL.
        return [*argv[:2], "--format", "docker", "--force-rm", *argv[2:]]

    def image_exists(self, ref: str) -> bool:
        return _quiet([self.path, "image", "exists", ref]).returncode == 0


class Buildah(Engine):
    """buildah: builds with ``bud --isolation chroot --layers`` and runs with ``buildah run``.

    A buildah "container" is a working container made by ``buildah from``; each ``call`` is a
    ``buildah run`` with the mounts repeated (buildah has no persistent mounts).
    """

    name = "buildah"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._mounts: dict[str, dict[str, str]] = {}

    def build_argv(
        self,
        dockerfile: Path,
        context: Path,
        tag: str,
        build_args: Mapping[str, str],
        target: str | None,
        labels: Mapping[str, str],
        no_cache: bool,
    ) -> list[str]:
        argv = super().build_argv(dockerfile, context, tag, build_args, target, labels, no_cache)
        # bud without --layers keeps no intermediate layers: every build would start cold.
        # --pull=false: the base image is local (made offline or pulled by `rvtorch image base`).
        # --format docker: the OCI format drops SHELL, and the Dockerfile's RUNs rely on bash
        # with pipefail.
        # --force-rm: a failed build leaves no intermediate working container behind.
        return [self.path, "bud", "--isolation", "chroot", "--layers", "--pull=false",
                "--format", "docker", "--force-rm", *argv[2:]]

    def image_exists(self, ref: str) -> bool:
        return _quiet([self.path, "inspect", "--type", "image", ref]).returncode == 0

    def image_id(self, ref: str) -> str | None:
        r = _quiet([self.path, "inspect", "--type", "image", "--format", "{{.FromImageID}}", ref])
        return r.stdout.strip() or None if r.returncode == 0 else None

    def image_labels(self, ref: str) -> dict[str, str]:
        import json

        # buildah's --format templates have no `json` function (1.28): parse the whole record.
        r = _quiet([self.path, "inspect", "--type", "image", ref])
        if r.returncode != 0:
            return {}
        config = json.loads(r.stdout).get("OCIv1", {}).get("config", {})
        return dict(config.get("Labels") or {})

    def import_tarball(self, tarball: Path, ref: str,
                       labels: Mapping[str, str] | None = None) -> None:
        # buildah has no `import`: add the tarball (auto-extracted) to an empty container, named
        # like every rvtorch container so a killed import's leftover is found and removed.
        self.remove_stale_containers()
        ctr = _container_name()
        run([self.path, "from", "--name", ctr, "scratch"], capture=True)
        try:
            run([self.path, "add", ctr, str(tarball), "/"], capture=True,
                what=f"add {tarball.name} to {ctr}")
            config = [self.path, "config", "--cmd", "/bin/bash"]
            for k, v in (labels or {}).items():
                config += ["--label", f"{k}={v}"]
            _run_logged([*config, ctr], what=f"config {ctr}")
            run([self.path, "commit", "--quiet", ctr, ref], capture=True, what=f"commit {ref}")
        finally:
            run([self.path, "rm", ctr], check=False, capture=True)

    def start(self, image: str, name: str, mounts: Mapping[str, str]) -> str:
        run([self.path, "from", "--pull-never", "--name", name, image], capture=True,
            what=f"buildah from {image}")
        self._mounts[name] = dict(mounts)
        return name

    def exec_argv(
        self, handle: str, cmd: list[str], env: Mapping[str, str], cwd: str | None
    ) -> list[str]:
        argv = [self.path, "run", "--isolation", "chroot"]
        for host, ctr in self._mounts.get(handle, {}).items():
            argv += ["-v", f"{host}:{ctr}"]
        for k, v in env.items():
            argv += ["--env", f"{k}={v}"]
        if cwd:
            argv += ["--workingdir", cwd]
        return [*argv, handle, "--", *cmd]

    def remove_argv(self, handle: str) -> list[str]:
        self._mounts.pop(handle, None)
        return [self.path, "rm", handle]

    def list_containers_argv(self) -> list[str]:
        return [self.path, "containers", "--format", "{{.ContainerName}}"]

    def list_images_argv(self) -> list[str]:
        return [self.path, "images", "--format", "{{.Name}}:{{.Tag}}"]
