"""``rvtorch doctor``: what this machine offers for building and emulating, and how to fix gaps.

Every check yields a :class:`Finding`: ``ok``, ``warn`` (works, but slower or with limits) or
``missing`` (something required: the command exits 2), each gap with the command that fixes it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from . import emulate
from .errors import RvtorchError
from .paths import cache_dir
from .targets import matrix


@dataclass(frozen=True, kw_only=True)
class Finding:
    area: str
    status: str  # ok | warn | missing
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def _engines() -> Iterator[Finding]:
    try:
        from . import engine
    except ImportError:
        engine = None  # type: ignore[assignment]
    names = getattr(engine, "ENGINES", ("docker", "podman", "buildah"))
    usable = []
    details = []
    for name in names:
        if engine is not None and hasattr(engine, "probe"):
            p = engine.probe(name)
            if p.can_build and p.can_run:
                usable.append(name)
                details.append(f"{name}: builds and runs")
            elif p.path:
                reason = p.reason if len(p.reason) <= 90 else p.reason[:87] + "..."
                details.append(f"{name}: {reason}")
        elif shutil.which(name):
            usable.append(name)
            details.append(f"{name}: {shutil.which(name)}")
    forced = os.environ.get("RVTORCH_ENGINE")
    detail = "; ".join(details) or "none installed"
    if usable:
        chosen = forced if forced in usable else usable[0]
        yield Finding(area="engine", status="ok", detail=f"using {chosen} ({detail})")
    else:
        yield Finding(area="engine", status="missing", detail=detail,
                      fix="apt-get install buildah (needs no daemon)")


def _tools() -> Iterator[Finding]:
    for tool, pkg, why in (
        ("debootstrap", "debootstrap", "creates the target root filesystems"),
        ("chroot", "coreutils", "runs the rootfs"),
        ("dpkg-query", "dpkg", "records rootfs package versions"),
    ):
        found = shutil.which(tool)
        if found:
            yield Finding(area=tool, status="ok", detail=found)
        else:
            yield Finding(area=tool, status="missing", detail=f"not found ({why})",
                          fix=f"apt-get install {pkg}")


def _qemu() -> Iterator[Finding]:
    from .rootfs import rootfs_path

    for t in matrix().targets:
        path = shutil.which(t.qemu_binary)
        if not path:
            yield Finding(area=t.qemu_binary, status="missing", detail="not found",
                          fix="apt-get install qemu-user-static")
            continue
        version = emulate.qemu_version(path) or "unknown version"
        yield Finding(area=t.qemu_binary, status="ok", detail=f"{path}, version {version}")
        rootfs = rootfs_path(t.arch, create_cache=False)
        for model in t.cpu:
            err = emulate.probe_cpu(path, model.qemu_cpu, rootfs if rootfs.is_dir() else None)
            if err is None:
                yield Finding(area=f"cpu {t.arch}/{model.name}", status="ok",
                              detail=f"-cpu {model.qemu_cpu}")
            else:
                yield Finding(
                    area=f"cpu {t.arch}/{model.name}", status="missing",
                    detail=f"qemu {version} rejects -cpu {model.qemu_cpu}: {err}",
                    fix=f"install a qemu-user-static that knows {model.qemu_cpu.split(',')[0]} "
                    "or change the model in toolchains/targets.toml",
                )


def _binfmt() -> Iterator[Finding]:
    mounted = emulate.binfmt_mounted()
    for t in matrix().targets:
        st = emulate.binfmt_state(t)
        if st.usable_in(None):
            yield Finding(area=f"binfmt {t.arch}", status="ok", detail=st.describe())
        else:
            fix = f"sudo rvtorch emulator setup --arch {t.arch}"
            if not mounted:
                fix = "sudo rvtorch emulator setup (mounts binfmt_misc and registers qemu)"
            yield Finding(
                area=f"binfmt {t.arch}", status="warn",
                detail=f"{st.describe()}: running falls back to explicit qemu -L "
                "(target programs cannot start target subprocesses)",
                fix=fix,
            )


def _cache() -> Iterator[Finding]:
    from .rootfs import MIN_FREE_BYTES, is_complete, rootfs_path

    try:
        root = cache_dir()
    except RvtorchError as exc:
        yield Finding(area="cache", status="missing", detail=str(exc),
                      fix="export RVTORCH_CACHE=<a writable directory>")
        return
    free = shutil.disk_usage(root).free
    status = "ok" if free >= MIN_FREE_BYTES else "missing"
    yield Finding(area="cache", status=status,
                  detail=f"{root} writable, {free / 2**30:.1f} GiB free",
                  fix="" if status == "ok" else
                  f"free {MIN_FREE_BYTES >> 30} GiB there or export RVTORCH_CACHE=<elsewhere>")
    for arch in emulate.all_arches():
        for torch in (False, True):
            path = rootfs_path(arch, torch)
            flag = " --with-torch" if torch else ""
            if is_complete(path, arch, torch):
                yield Finding(area=f"rootfs {path.name}", status="ok", detail=str(path))
            else:
                yield Finding(area=f"rootfs {path.name}", status="warn",
                              detail="not created yet (made on first use)",
                              fix=f"sudo rvtorch rootfs create --arch {arch}{flag}")


def _mirror() -> Iterator[Finding]:
    from .aptsource import debian_mirror

    try:
        url = debian_mirror(suite=matrix().project.suite)
    except RvtorchError as exc:
        yield Finding(area="debian mirror", status="missing", detail=str(exc),
                      fix="export RVTORCH_DEBIAN_MIRROR=http://<mirror>/debian")
        return
    yield Finding(area="debian mirror", status="ok", detail=url)


def _privileges() -> Iterator[Finding]:
    if emulate.is_root():
        yield Finding(area="root", status="ok", detail="running as root (debootstrap, chroot)")
    else:
        yield Finding(area="root", status="warn",
                      detail="not root: rootfs creation and binfmt/chroot need root; "
                      "existing rootfs run through explicit qemu -L",
                      fix="run rootfs creation with sudo")


def findings() -> list[Finding]:
    out: list[Finding] = []
    for check in (_engines, _tools, _qemu, _binfmt, _mirror, _cache, _privileges):
        out.extend(check())
    return out
