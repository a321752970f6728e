"""Real target ELF files without the toolchain image: small Debian trixie packages, pinned.

python3-zstd is a CPython 3.13 extension that links the system libzstd (not in any manylinux
policy), so a wheel made from it must get libzstd bundled by repair, exactly like torch's _C and
libopenblas. Files come straight from the mirror's pool (the path pins the version) and are
checked against their sha256 before use; a mismatch deletes the file.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from rvtorch.aptsource import debian_mirror
from rvtorch.paths import cache_dir


@dataclass(frozen=True)
class Deb:
    pool_path: str
    sha256: str


# Debian architecture -> (the extension package, the library it links).
PINS: dict[str, tuple[Deb, Deb]] = {
    "riscv64": (
        Deb("pool/main/p/python-zstd/python3-zstd_1.5.5.1-1+b3_riscv64.deb",
            "890575035c40e1cb79d0e85f536641ee0690a2fed9664b06722a6f47c5f033b5"),
        Deb("pool/main/libz/libzstd/libzstd1_1.5.7+dfsg-1_riscv64.deb",
            "5967f5f97bfb6e7a8036d4e615c0ecd6861a9bb686bd60ee0c81422581faf0ad"),
    ),
    "arm64": (
        Deb("pool/main/p/python-zstd/python3-zstd_1.5.5.1-1+b4_arm64.deb",
            "b3694ca4d4867d118b841731ccb671e993d8c47324d3ddc0d8bec8b695d903c7"),
        Deb("pool/main/libz/libzstd/libzstd1_1.5.7+dfsg-1_arm64.deb",
            "924540bd59fdbfa77a0604360efdaca54411a43daf11c7e002a3c64791b67448"),
    ),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_deb(deb: Deb) -> Path:
    store = cache_dir() / "test-debs"
    store.mkdir(parents=True, exist_ok=True)
    dest = store / Path(deb.pool_path).name
    if dest.is_file() and _sha256(dest) == deb.sha256:
        return dest
    url = f"{debian_mirror(suite='trixie')}/{deb.pool_path}"
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, part.open("wb") as out:
            shutil.copyfileobj(resp, out)
    except OSError as exc:
        pytest.skip(f"Debian archive not reachable ({url}: {exc})")
    if _sha256(part) != deb.sha256:
        part.unlink()
        raise AssertionError(f"{url}: sha256 mismatch (file deleted)")
    part.rename(dest)
    return dest


def unpack_deb(deb: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into


def zstd_root(debian_arch: str, into: Path) -> Path:
    """A directory tree holding the extension and its library as Debian installs them."""
    if debian_arch not in PINS:
        pytest.skip(f"no pinned Debian packages for {debian_arch}")
    for deb in PINS[debian_arch]:
        unpack_deb(fetch_deb(deb), into)
    return into
