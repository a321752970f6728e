"""A local wheelhouse of torch's pure-Python dependencies, and a clean target venv made from it.

A board user installs our wheel with ``python3 -m venv ENV && ENV/bin/pip install torch-*.whl``:
pip pulls sympy, mpmath, filelock, typing-extensions, networkx, jinja2, MarkupSafe, fsspec and
setuptools (torch's ``Requires-Dist``) from PyPI. The validation does the same, offline: the
dependencies are downloaded once on the host (:func:`gather`, pinned by name and sha256 in
``toolchains/wheelhouse.toml``) and the target's own pip installs the wheel from that directory
with ``--no-index`` (:func:`install_commands`, :func:`install_in_rootfs`). No Debian torch, no
``--system-site-packages``, no ``PYTHONPATH``: what imports is what pip installed.

Public API (also used by ``rvtorch board install``):

* :func:`pins` — the pinned files for an arch;
* :func:`gather` ``(target, dest=None) -> list[Path]`` — the verified wheelhouse;
* :func:`wheel_requirements` / :func:`check_covers` — the wheel's ``Requires-Dist`` that apply on
  the target, and a usage error if the wheelhouse lacks one;
* :func:`install_commands` — the guest argv lists that make the venv and pip-install (for any
  way of running commands on a target: chroot, qemu-user, ssh to a board);
* :func:`install_in_rootfs` — those commands run in a target rootfs under QEMU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path
from typing import Any

from .errors import SourceError, UsageError
from .paths import cache_dir, data_dir
from .sources import sha256_file
from .targets import Target, matrix, target

PINS_FILE = "toolchains/wheelhouse.toml"
# Lowest manylinux glibc pip may accept besides the target's own tag: pip expands only the legacy
# manylinux2014/2010 names of --platform, so the PEP 600 tags below the target's are listed.
MIN_MANYLINUX_GLIBC = 17
# pip runs under QEMU: give it time (unpacking a 65 MB wheel is emulated zlib).
INSTALL_TIMEOUT = 3600.0


@dataclass(frozen=True, kw_only=True)
class Pin:
    name: str
    version: str
    file: str
    sha256: str
    arch: str = "any"  # "any" (a py3-none-any wheel) or the targets.toml arch it is built for


def load_pins(path: Path | None = None) -> list[Pin]:
    path = path or data_dir(PINS_FILE)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    out = []
    for i, entry in enumerate(data.get("wheel", [])):
        try:
            out.append(Pin(**entry))
        except TypeError as exc:
            raise UsageError(f"{path}: wheel #{i + 1}: {exc}") from exc
    return out


def pins(arch: str, path: Path | None = None) -> list[Pin]:
    """The pinned files for ``arch``: the pure-Python ones and those built for it."""
    matrix().target(arch)  # unknown arch: usage error
    chosen = [p for p in load_pins(path) if p.arch in ("any", arch)]
    names = [p.name for p in chosen]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"{PINS_FILE} pins {', '.join(dup)} more than once for {arch}")
    return chosen


def platform_tags(t: Target) -> list[str]:
    """``--platform`` values for pip: the target's manylinux tag and every older glibc."""
    prefix, _, rest = t.wheel_platform.partition("_")
    if prefix != "manylinux" or not rest.startswith("2_"):
        return [t.wheel_platform]
    major, minor, machine = rest.split("_", 2)
    return [f"manylinux_{major}_{m}_{machine}"
            for m in range(int(minor), MIN_MANYLINUX_GLIBC - 1, -1)] + [f"manylinux2014_{machine}"]



def default_dest(arch: str) -> Path:
    return cache_dir() / "wheelhouse" / arch


def gather(target_or_arch: str | Target, dest: Path | None = None) -> list[Path]:
    """The pinned wheels for the target in ``dest`` (default ``<cache>/wheelhouse/<arch>``).

    Files already there with the right sha256 are reused; the rest are fetched with ``pip
    download --require-hashes --no-deps --only-binary=:all:`` for the target's platform and
    Python, then checked again. A wrong file is deleted (SourceError, exit 3); nothing
    half-downloaded is left in ``dest``. Returns the files, in pin order.
    """
    t = target_or_arch if isinstance(target_or_arch, Target) else target(target_or_arch)
    dest = Path(dest) if dest is not None else default_dest(t.arch)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = pins(t.arch)
    for p in wanted:
        have = dest / p.file
        if have.is_file() and sha256_file(have) != p.sha256:
            have.unlink()
    missing = [p for p in wanted if not (dest / p.file).is_file()]
    if missing:
        _download(t, missing, dest)
    return [dest / p.file for p in wanted]


def _download(t: Target, missing: Sequence[Pin], dest: Path) -> None:
    py = matrix().project.python
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest))
    try:
        req = tmp / "requirements.txt"
        req.write_text("".join(f"{p.name}=={p.version} --hash=sha256:{p.sha256}\n"
                               for p in missing))
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
               "--no-deps", "--only-binary=:all:", "--require-hashes",
               "--python-version", py, "--implementation", "cp",
               "--abi", "cp" + py.replace(".", ""), "--dest", str(tmp / "files"), "-r", str(req)]
        for tag in platform_tags(t):
            cmd += ["--platform", tag]
        print(f"rvtorch: fetching {len(missing)} wheel(s) for the {t.arch} wheelhouse",
              file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise SourceError(f"pip download for the {t.arch} wheelhouse failed: {last}",
                              hint="needs PyPI or a mirror in pip's configuration")
        for p in missing:
            got = tmp / "files" / p.file
            if not got.is_file():
                found = sorted(x.name for x in (tmp / "files").iterdir())
                raise SourceError(f"pip download gave no {p.file}", hint=f"got {found}")
            digest = sha256_file(got)
            if digest != p.sha256:
                got.unlink()
                raise SourceError(f"{p.file}: sha256 {digest} != pinned {p.sha256} (deleted)")
            os.replace(got, dest / p.file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------- requirements
def wheel_metadata(wheel: Path) -> Any:
    """The parsed ``METADATA`` of a wheel (an email.message.Message)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist()
                     if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(names) != 1:
                raise UsageError(f"{wheel.name} has {len(names)} .dist-info/METADATA files")
            text = zf.read(names[0]).decode()
    except (OSError, zipfile.BadZipFile) as exc:
        raise UsageError(f"cannot read {wheel}: {exc}") from exc
    return Parser().parsestr(text)


def target_environment(t: Target) -> dict[str, str]:
    """PEP 508 marker values of the target's CPython on Linux."""
    py = matrix().project.python
    return {"python_version": py, "python_full_version": f"{py}.0", "sys_platform": "linux",
            "platform_system": "Linux", "os_name": "posix", "platform_machine": t.arch,
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "extra": ""}


def wheel_requirements(wheel: Path, t: Target | str) -> list[str]:
    """The wheel's ``Requires-Dist`` entries that apply on the target (no extras)."""
    from packaging.requirements import Requirement

    t = t if isinstance(t, Target) else target(t)
    env = target_environment(t)
    out = []
    for line in wheel_metadata(wheel).get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            out.append(str(req))
    return out


def check_covers(wheel: Path, t: Target | str, have: Sequence[Pin] | None = None) -> None:
    """A usage error (exit 2) if a requirement of ``wheel`` is not satisfied by the pins."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    t = t if isinstance(t, Target) else target(t)
    have = list(have) if have is not None else pins(t.arch)
    by_name = {canonicalize_name(p.name): p for p in have}
    bad = []
    for line in wheel_requirements(wheel, t):
        req = Requirement(line)
        pin = by_name.get(canonicalize_name(req.name))
        if pin is None or not req.specifier.contains(pin.version, prereleases=True):
            bad.append(f"{line} (pinned: {pin.version if pin else 'nothing'})")
    if bad:
        raise UsageError(f"{wheel.name} requires what {PINS_FILE} does not pin: "
                         + "; ".join(bad), hint=f"add the wheel(s) to {PINS_FILE}")


# ------------------------------------------------------------------------------ the target venv
def pip_wheel(files: Sequence[Path]) -> Path:
    for f in files:
        if f.name.startswith("pip-") and f.name.endswith(".whl"):
            return f
    raise UsageError(f"{PINS_FILE} pins no pip wheel")


# pip in the guest reads no configuration file (under explicit `qemu -L` the host's /etc/pip.conf
# would shine through) and never asks or phones home.
PIP_ENV = {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_NO_INPUT": "1", "PIP_NO_CACHE_DIR": "1"}


# `python3 -m venv --without-pip ENV`, minus the activation scripts (see install_commands).
VENV_SCRIPT = ("import sys, venv; b = venv.EnvBuilder(with_pip=False); "
               "b.setup_scripts = lambda context: None; b.create(sys.argv[1])")


def install_commands(python: str, venv: str, wheelhouse: str, wheel: str, *,
                     pip_whl: str) -> list[list[str]]:
    """Guest argv lists: a venv at ``venv`` made by ``python``, then its pip installs ``wheel``.

    All paths are guest paths. The venv is made by the standard library's ``venv.EnvBuilder``
    without pip and without the activation scripts: Debian moves those scripts and ensurepip into
    the python3-venv package, which a minimal system lacks, and ``python3 -m venv`` then fails
    copying ``Activate.ps1``; the environment itself (``pyvenv.cfg``, ``bin/python3``, an empty
    ``site-packages``, no system site-packages) is the same. pip runs from its pinned wheel
    (``pip.whl/pip``, a layout pip supports) and installs itself, the wheel and its dependencies
    from ``wheelhouse`` only. ``--no-compile``: byte-compiling torch's 2000 modules under QEMU
    costs minutes; Python compiles what it imports anyway. Run them with :data:`PIP_ENV` in the
    environment.
    """
    return [
        [python, "-c", VENV_SCRIPT, venv],
        [f"{venv}/bin/python3", f"{pip_whl}/pip", "install", "--no-index", "--find-links",
         wheelhouse, "--only-binary=:all:", "--no-compile", "pip", wheel],
    ]


@dataclass(kw_only=True)
class Installed:
    """What :func:`install_in_rootfs` made."""

    venv_host: Path
    venv_guest: str
    python_guest: str
    packages: dict[str, str]   # distribution name -> version, read from the venv's dist-info
    wheelhouse: list[str]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"venv": self.venv_guest, "python": self.python_guest, "packages": self.packages,
                "wheelhouse": self.wheelhouse, "install_s": round(self.seconds, 1)}


def installed_packages(venv_host: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for meta in sorted(venv_host.glob("lib/python3*/site-packages/*.dist-info/METADATA")):
        msg = Parser().parsestr(meta.read_text(errors="replace"), headersonly=True)
        if msg.get("Name"):
            out[str(msg["Name"])] = str(msg.get("Version", ""))
    return out


def install_in_rootfs(arch: str, rootfs: Path, wheel: Path, workdir: tuple[Path, str], *,
                      cpu: str | None = None, wheelhouse: Path | None = None) -> Installed:
    """Make ``<workdir>/venv`` in ``rootfs`` and pip-install ``wheel`` into it under QEMU.

    ``workdir`` is (host path, guest path) of a directory the guest can write (e.g.
    ``emulate.guest_tmpdir``); the wheelhouse and the wheel are copied there first so the guest
    sees them in both emulation modes. A failing step is a UsageError (exit 2) with pip's last
    line: an uninstallable wheel is an environment problem, not a wrong result.
    """
    from .emulate import guest_command

    host, guest = workdir
    t = target(arch)
    check_covers(wheel, t)
    files = gather(t, wheelhouse)
    wh_host = host / "wheelhouse"
    wh_host.mkdir()
    for f in files:
        shutil.copy2(f, wh_host / f.name)
    shutil.copy2(wheel, host / wheel.name)
    venv = f"{guest}/venv"
    cmds = install_commands("/usr/bin/python3", venv, f"{guest}/wheelhouse",
                            f"{guest}/{wheel.name}", pip_whl=f"{guest}/wheelhouse/"
                            f"{pip_wheel(files).name}")
    t0 = time.monotonic()
    for argv in cmds:
        cmd, env = guest_command(arch, argv, cpu=cpu, rootfs=rootfs, env=PIP_ENV)
        print("+ (guest) " + " ".join(argv), file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT, check=False)
        if proc.returncode != 0:
            last = ((proc.stderr.strip() or proc.stdout.strip()).splitlines() or ["?"])[-1]
            raise UsageError(f"installing {wheel.name} into a venv in the {arch} rootfs failed "
                             f"at `{' '.join(argv[:3])} ...` (exit {proc.returncode}): {last}")
    (host / wheel.name).unlink()
    return Installed(venv_host=host / "venv", venv_guest=venv, python_guest=f"{venv}/bin/python3",
                     packages=installed_packages(host / "venv"),
                     wheelhouse=[f.name for f in files], seconds=time.monotonic() - t0)
