"""Make small wheels for the wheel tests, with auditwheel's own RECORD and zip tooling."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import shutil
import stat
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from auditwheel.tools import dir2zip, zip2dir
from auditwheel.wheeltools import rewrite_record

Content = bytes | str | Path


def make_wheel(
    out_dir: Path,
    files: Mapping[str, Content],
    *,
    version: str = "2.6.0+riscv64",
    tag: str = "cp313-cp313-linux_riscv64",
    name: str = "torch",
) -> Path:
    """A wheel holding ``files`` ({member: bytes | text | host file to copy}) plus dist-info."""
    dist_info = f"{name}-{version}.dist-info"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for member, content in files.items():
            dest = root / member
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copy(content, dest)
            elif isinstance(content, str):
                dest.write_text(content)
            else:
                dest.write_bytes(content)
        info = root / dist_info
        info.mkdir(exist_ok=True)
        if not (info / "METADATA").exists():
            (info / "METADATA").write_text(
                f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                "Requires-Python: >=3.13\n"
            )
        if not (info / "WHEEL").exists():
            (info / "WHEEL").write_text(
                "Wheel-Version: 1.0\nGenerator: rvtorch-tests\nRoot-Is-Purelib: false\n"
                f"Tag: {tag}\n"
            )
        rewrite_record(root)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{name}-{version}-{tag}.whl"
        dir2zip(root, path, 6, None)
    return path


def rewrite_wheel(wheel: Path, changes: Mapping[str, Content | None], out: Path | None = None,
                  *, keep_record: bool = False) -> Path:
    """A copy of ``wheel`` with members added/replaced (or removed with None); RECORD rewritten
    unless ``keep_record`` (to fabricate a wheel whose RECORD lies)."""
    out = out or wheel
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        zip2dir(wheel, root)
        for member, content in changes.items():
            dest = root / member
            if content is None:
                dest.unlink()
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copy(content, dest)
            elif isinstance(content, str):
                dest.write_text(content)
            else:
                dest.write_bytes(content)
        if not keep_record:
            rewrite_record(root)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_name(out.name + ".tmp")
        dir2zip(root, tmp_out, 6, None)
        tmp_out.replace(out)
    return out


# ---------------------------------------------------------------------------------------------
# Raw wheels: member by member, so a test can write what no well-behaved tool would (unsafe
# names, duplicates, symlink/device entries, a RECORD that lies) and mutate the bytes after.
# ---------------------------------------------------------------------------------------------

REGULAR = stat.S_IFREG | 0o644


@dataclass
class Entry:
    """One zip member: its name as stored, its bytes, its st_mode (zip external_attr >> 16)."""

    name: str
    data: bytes
    mode: int = REGULAR
    compress_type: int = zipfile.ZIP_DEFLATED


def read_entries(wheel: Path) -> list[Entry]:
    """Every member of a (well-formed) zip in stored order; CRCs checked by zipfile."""
    with zipfile.ZipFile(wheel) as zf:
        return [Entry(i.filename, zf.read(i), i.external_attr >> 16, i.compress_type)
                for i in zf.infolist()]


def write_entries(entries: Iterable[Entry], path: Path) -> Path:
    """Write ``entries`` verbatim: no name sanitising, duplicates kept (zipfile only warns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": exactly what some tests want
        with zipfile.ZipFile(path, "w") as zf:
            for e in entries:
                info = zipfile.ZipInfo(e.name, date_time=(2026, 1, 1, 0, 0, 0))
                info.external_attr = (e.mode & 0xFFFF) << 16
                info.create_system = 3
                info.compress_type = e.compress_type
                zf.writestr(info, e.data)
    return path


def record_digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def with_record(entries: list[Entry]) -> list[Entry]:
    """``entries`` with their ``*.dist-info/RECORD`` rewritten to list every other member."""
    record = next(e for e in entries if e.name.endswith(".dist-info/RECORD"))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for e in entries:
        if e is not record and not e.name.endswith("/"):
            writer.writerow([e.name, record_digest(e.data), len(e.data)])
    writer.writerow([record.name, "", ""])
    return [Entry(e.name, out.getvalue().encode(), e.mode, e.compress_type) if e is record
            else e for e in entries]


def shared_object(machine: str, flags: int, soname: str, needed: Iterable[str] = ()) -> bytes:
    """A minimal ELF64 (little-endian) shared object for ``machine`` (``EM_RISCV``, ...).

    Offline there is no target toolchain, and the build machine's own libraries need symbol
    versions of its glibc (``GLIBC_2.2.5`` on x86-64) that no riscv64 policy knows. So this
    lays out what a linker would for a library without code: the ELF header, PT_LOAD and
    PT_DYNAMIC, ``.dynstr``, ``.dynamic`` (DT_NEEDED, DT_SONAME, DT_STRTAB, DT_STRSZ) and
    ``.shstrtab`` with their section headers, everything inside the file. pyelftools reads it
    like any linked library; the integration tests run the same checks on Debian's real
    riscv64/arm64 libraries.
    """
    from elftools.elf.enums import ENUM_E_MACHINE

    ehsize, phentsize, shentsize = 64, 56, 64
    dynstr = b"\0"
    offsets = {}
    for s in (*needed, soname):
        offsets[s] = len(dynstr)
        dynstr += s.encode() + b"\0"
    shstrtab = b"\0.dynstr\0.dynamic\0.shstrtab\0"
    dynstr_off = ehsize + 2 * phentsize
    dynamic_off = (dynstr_off + len(dynstr) + 7) & ~7
    tags = [(1, offsets[n]) for n in needed]  # DT_NEEDED
    tags += [(14, offsets[soname]), (5, dynstr_off), (10, len(dynstr)), (0, 0)]
    dynamic = b"".join(struct.pack("<qQ", t, v) for t, v in tags)
    shstrtab_off = dynamic_off + len(dynamic)
    shoff = (shstrtab_off + len(shstrtab) + 7) & ~7
    size = shoff + 4 * shentsize
    header = struct.pack(
        "<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, b"\0" * 7,
        3, ENUM_E_MACHINE[machine], 1, 0, ehsize, shoff, flags,
        ehsize, phentsize, 2, shentsize, 4, 3)
    phdrs = struct.pack("<IIQQQQQQ", 1, 4, 0, 0, 0, size, size, 0x1000)  # PT_LOAD, R
    phdrs += struct.pack("<IIQQQQQQ", 2, 6, dynamic_off, dynamic_off, dynamic_off,  # PT_DYNAMIC
                         len(dynamic), len(dynamic), 8)

    def shdr(name: int, kind: int, flags: int, off: int, size: int, link: int = 0,
             align: int = 1, entsize: int = 0) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, kind, flags, off if flags else 0, off, size,
                           link, 0, align, entsize)

    shdrs = b"\0" * shentsize  # SHN_UNDEF
    shdrs += shdr(1, 3, 2, dynstr_off, len(dynstr))  # .dynstr: SHT_STRTAB, SHF_ALLOC
    shdrs += shdr(9, 6, 3, dynamic_off, len(dynamic), link=1, align=8, entsize=16)  # .dynamic
    shdrs += shdr(18, 3, 0, shstrtab_off, len(shstrtab))  # .shstrtab
    out = bytearray(size)
    out[0:ehsize] = header
    out[ehsize:dynstr_off] = phdrs
    out[dynstr_off:dynstr_off + len(dynstr)] = dynstr
    out[dynamic_off:dynamic_off + len(dynamic)] = dynamic
    out[shstrtab_off:shstrtab_off + len(shstrtab)] = shstrtab
    out[shoff:size] = shdrs
    return bytes(out)


def target_extension(arch: str = "riscv64") -> tuple[str, bytes]:
    """(member name, bytes) of a ``torch/_C`` that passes every ELF check for ``arch``."""
    from rvtorch.targets import target
    from rvtorch.wheel import expected_soabi

    t = target(arch)
    flags = 0x5 if t.elf_machine == "EM_RISCV" else 0  # RVC + double-float ABI (lp64d)
    name = f"torch/_C.{expected_soabi(t)}.so"
    return name, shared_object(t.elf_machine, flags, name.rsplit("/", 1)[1], ["libc.so.6"])


# A non-ASCII summary: re-encoding METADATA (latin-1, UTF-16) then really changes its bytes.
VALID_SUMMARY = "Tensors and dynamic neural networks — a riscv64 build"


def valid_entries(arch: str = "riscv64") -> list[Entry]:
    """The members of a wheel that passes ``check-wheel`` for ``arch``."""
    from rvtorch.targets import target
    from rvtorch.wheel import wheel_arch_suffix

    t = target(arch)
    version = f"2.6.0+{arch}"
    tag = f"cp313-cp313-{t.wheel_platform}"
    assert t.wheel_platform.endswith(wheel_arch_suffix(t))
    dist = f"torch-{version}.dist-info"
    ext_name, ext = target_extension(arch)
    entries = [
        Entry("torch/", b"", stat.S_IFDIR | 0o755, zipfile.ZIP_STORED),
        Entry("torch/__init__.py", b"from torch._C import *  # noqa: F403\n"),
        Entry(ext_name, ext, stat.S_IFREG | 0o755),
        Entry("torch/lib/README.txt", b"bundled libraries live in torch.libs/\n"),
        Entry(f"{dist}/METADATA", (
            f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n"
            f"Summary: {VALID_SUMMARY}\nRequires-Python: >=3.13\n"
            "Requires-Dist: filelock\n").encode()),
        Entry(f"{dist}/WHEEL", (
            "Wheel-Version: 1.0\nGenerator: rvtorch-tests\nRoot-Is-Purelib: false\n"
            f"Tag: {tag}\n").encode()),
        Entry(f"{dist}/RECORD", b""),
    ]
    return with_record(entries)


def valid_wheel(out_dir: Path, arch: str = "riscv64") -> Path:
    """A wheel file that passes ``check-wheel`` (its name from the entries' version and tag)."""
    from rvtorch.targets import target

    t = target(arch)
    return write_entries(valid_entries(arch),
                         out_dir / f"torch-2.6.0+{arch}-cp313-cp313-{t.wheel_platform}.whl")
