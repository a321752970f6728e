"""``check_wheel``, the gate every wheel passes before it reaches ``dist/`` (``check-wheel``).

The wheel is hostile input: a crafted or damaged file must give findings (exit 4 through the
CLI), never a traceback, and nothing is ever extracted under a member's own name. In order:

1. the zip itself: opens, every member a plain file or directory with a safe relative name (no
   absolute path, ``..``, ``.``, empty component, backslash or control character; no symlink,
   device or fifo entry; no duplicates; no name that is both a file and a directory), stored or
   deflated, not encrypted, and every member read to its end so zipfile checks its CRC;
2. RECORD: UTF-8 CSV of exactly three fields a row, every member listed once (except RECORD
   and its signatures) with its sha256 and size;
3. METADATA (core metadata, validated by ``packaging.metadata``) and WHEEL (Wheel-Version 1.x,
   Root-Is-Purelib false, Tag lines = the file name's tags), both UTF-8;
4. every ELF member: a sane header and tables inside the file (pyelftools), the target's
   machine and float ABI, SOABI, RPATHs, needed libraries and symbol versions against the
   manylinux policy (auditwheel's), no test binaries or stray executables;
5. build paths in ELF and text members: ``BUILD_PATH_PATTERNS`` (any machine's), plus the
   directories the build names and this machine's rvtorch cache.

Each check guards against a bug seen in the wild; docs/wheel.md has the table.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import email.parser
import email.policy
import errno
import hashlib
import io
import os
import platform
import posixpath
import re
import stat
import struct
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from packaging.metadata import InvalidMetadata, Metadata, parse_email
from packaging.tags import Tag, parse_tag
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from .errors import BuildError, UsageError
from .paths import cache_dir
from .targets import Target, matrix
from .targets import target as lookup_target

# The distribution name every wheel we make carries: a board's `pip install` of anything that
# requires `torch` must be satisfied by it.
DIST_NAME = "torch"
# Where auditwheel grafts bundled libraries: <package>.libs/ next to the package.
LIB_SDIR = ".libs"
# The only executable a torch wheel legitimately ships (torch/bin/).
ALLOWED_EXECUTABLES = frozenset({"torch_shm_manager"})
# A name that says "test binary" (gtest targets of BUILD_TEST=1: c10_*_test, test_api, ...).
_TEST_NAME = re.compile(r"(^|[_-])tests?([_-]|$)|^test", re.IGNORECASE)
# Text members scanned for absolute build paths.
TEXT_SUFFIXES = (".py", ".pyi", ".cmake", ".txt", ".json", ".pc", ".cfg", ".ini")
# RISC-V e_flags float-ABI field (psABI): the -mabi suffix says which value every object needs.
_RISCV_FLOAT_ABI_MASK = 0x6
_RISCV_FLOAT_ABI = {"lp64": 0x0, "lp64f": 0x2, "lp64d": 0x4, "lp64q": 0x6}
DF_1_PIE = 0x08000000


@dataclass(frozen=True)
class BuildPathPattern:
    """A string that marks a path of some build machine (``regex`` over the member's bytes)."""

    regex: str
    example: str  # a string it matches: docs/wheel.md lists it, the tests plant it
    what: str


# THE list of build-path patterns (docs/wheel.md repeats it; a unit test keeps the two in step).
# Each names a path that only exists where a wheel was built, on any machine, so a wheel checked
# on a laptop fails the same way as on the build host. Upstream's own x86 torch wheels leak
# `/__w/pytorch/pytorch/build/...` (GitHub's runner workspace) into libtorch_cpu.so.
BUILD_PATH_PATTERNS: tuple[BuildPathPattern, ...] = (
    BuildPathPattern(r"/\.cache/rvtorch/", "/root/.cache/rvtorch/",
                     "an rvtorch cache on any machine (build trees, sources, Conan home)"),
    BuildPathPattern(r"/rvtorch/src(?![\w.-])", "/rvtorch/src",
                     "the source directory inside rvtorch's build container"),
    BuildPathPattern(r"/(?:py)?torch/build(?![\w.+-])", "/home/ci/pytorch/build",
                     "the CMake build directory of a PyTorch checkout"),
    BuildPathPattern(r"/tmp/pip-", "/tmp/pip-req-build-",
                     "pip's temporary build and install directories"),
    BuildPathPattern(r"/build/(?:temp|lib|bdist)\.linux-", "/build/temp.linux-riscv64-cpython-313",
                     "setuptools' build_ext and bdist directories"),
    BuildPathPattern(r"/usr/src/", "/usr/src/", "sources unpacked in a build image"),
)
# Kept for callers of the old name: the literal markers among the patterns.
DEFAULT_BUILD_PATH_MARKERS = ("/usr/src/",)

# A build path right after one of these is the flag that keeps it out of the objects (kept in
# torch's recorded CXX_FLAGS, `torch.__config__.show()`): the remedy, not a leak.
_PREFIX_MAP_FLAGS = (b"-ffile-prefix-map=", b"-fdebug-prefix-map=", b"-fmacro-prefix-map=")
# Bytes that end a path inside a string table, a flag list or source text.
_PATH_STOP = re.compile(rb"[\x00-\x20\"'=:;,()<>`]")

# What zipfile raises on a damaged archive or member (CRC, deflate stream, truncation, headers;
# NotImplementedError for the flag bits of patched data and strong encryption).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error,
               IndexError, OverflowError, NotImplementedError)
# Members a RECORD does not list (PEP 376/427): itself and its signatures.
_RECORD_EXEMPT = ("RECORD", "RECORD.jws", "RECORD.p7s")
# The .data/ subdirectories installers know (PEP 427 + sysconfig schemes).
_DATA_SCHEMES = frozenset({"purelib", "platlib", "headers", "scripts", "data"})
# Core metadata versions (packaging.metadata validates the fields; see _check_metadata).
_METADATA_VERSIONS = ("1.0", "1.1", "1.2", "2.1", "2.2", "2.3", "2.4")
# The order findings are reported in (the error line names the first): what makes the file
# unsafe or unreadable, then what makes it not this wheel, then what would fail on the board.
_CHECK_ORDER = {c: i for i, c in enumerate((
    "zip", "path", "record", "metadata", "name", "version", "tag", "elf", "machine",
    "float-abi", "soabi", "symbols", "needed", "rpath", "build-path", "unwanted"))}
# Only the first bytes of a symlink entry are its target.
_LINK_MAX = 4096
# zipfile never yields more than a member's declared size, so refusing to read members that
# declare more bounds the work (and the temp copy of an ELF) on a decompression bomb. torch's
# largest member, libtorch_cpu.so, is a few hundred MB.
MAX_MEMBER_BYTES = 4 << 30


@dataclass(frozen=True)
class Finding:
    """One failed check: which check, which member of the wheel, what is wrong."""

    check: str
    member: str
    message: str

    def __str__(self) -> str:
        member, message = printable(self.member), printable(self.message)
        where = f"{member}: " if member else ""
        return f"[{self.check}] {where}{message}"


def printable(text: str) -> str:
    """``text`` with control characters escaped. Member names and ELF strings come from the
    wheel: a newline, or a separator such as \\x1e that ``str.splitlines`` splits on, must not
    turn the one error line into two (or move the terminal's cursor)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass
class ElfInfo:
    member: str
    machine: str
    elf_class: int
    flags: int
    kind: str  # "shared object", "executable", "relocatable"
    soname: str | None = None
    needed: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()
    # (library, symbol version) pairs from .gnu.version_r, e.g. ("libc.so.6", "GLIBC_2.38")
    versions: tuple[tuple[str, str], ...] = ()


@dataclass
class CheckReport:
    """What ``check_wheel`` found. ``ok`` is true when there are no findings."""

    wheel: str
    arch: str
    name: str = ""
    version: str = ""
    tags: list[str] = field(default_factory=list)
    size_bytes: int = 0
    unpacked_bytes: int = 0
    file_count: int = 0
    elf_count: int = 0
    extension: str = ""
    bundled_libs: list[str] = field(default_factory=list)
    largest: list[tuple[str, int]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def fail(self, check: str, member: str, message: str) -> None:
        self.findings.append(Finding(check, member, message))

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ok"] = self.ok
        d["findings"] = [dataclasses.asdict(f) for f in self.findings]
        d["largest"] = [{"member": m, "bytes": b} for m, b in self.largest]
        return d

    def summary(self) -> str:
        mb = self.size_bytes / 1e6
        head = (f"{self.wheel}: {self.name} {self.version} [{', '.join(self.tags)}], "
                f"{mb:.1f} MB ({self.unpacked_bytes / 1e6:.1f} MB unpacked), "
                f"{self.file_count} files, {self.elf_count} ELF")
        if self.ok:
            return head + ": all checks passed"
        lines = [head + f": {len(self.findings)} problem(s)"]
        lines += [f"  {f}" for f in self.findings]
        return "\n".join(lines)


def _target(target: Target | str) -> Target:
    return lookup_target(target) if isinstance(target, str) else target


def wheel_arch_suffix(t: Target) -> str:
    """The wheel platform tag's arch part (``manylinux_2_39_riscv64`` -> ``riscv64``)."""
    return t.wheel_platform.split("_", 3)[3]


def expected_soabi(t: Target) -> str:
    """The extension suffix tag a target CPython gives ``_C``: ``cpython-313-riscv64-linux-gnu``."""
    return f"cpython-{matrix().project.python.replace('.', '')}-{t.triple}"


def arch_of_wheel(path: Path) -> str:
    """The targets.toml arch a wheel's platform tag names (for ``check-wheel`` without --arch)."""
    try:
        _, _, _, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        raise UsageError(f"{path.name}: not a wheel file name ({exc})") from exc
    for t in matrix().targets:
        if any(tag.platform.endswith("_" + wheel_arch_suffix(t)) for tag in tags):
            return t.arch
    raise UsageError(f"{path.name}: its platform tag names no target of targets.toml",
                     hint="pass --arch")


# ---------------------------------------------------------------------------------------------
# ELF
# ---------------------------------------------------------------------------------------------


def _elf_info(member: str, fh: IO[bytes]) -> ElfInfo:
    elf = ELFFile(fh)
    kind = {"ET_DYN": "shared object", "ET_EXEC": "executable", "ET_REL": "relocatable"}.get(
        elf["e_type"], str(elf["e_type"])
    )
    has_interp = any(s["p_type"] == "PT_INTERP" for s in elf.iter_segments())
    info = ElfInfo(member=member, machine=elf["e_machine"], elf_class=elf.elfclass,
                   flags=elf["e_flags"], kind=kind)
    for section in elf.iter_sections():
        if not isinstance(section, DynamicSection):
            continue
        needed, rpath, runpath = [], [], []
        for tag in section.iter_tags():
            if tag.entry.d_tag == "DT_NEEDED":
                needed.append(tag.needed)  # type: ignore[attr-defined]
            elif tag.entry.d_tag == "DT_SONAME":
                info.soname = tag.soname  # type: ignore[attr-defined]
            elif tag.entry.d_tag == "DT_RPATH":
                rpath += [p for p in tag.rpath.split(":") if p]  # type: ignore[attr-defined]
            elif tag.entry.d_tag == "DT_RUNPATH":
                runpath += [p for p in tag.runpath.split(":") if p]  # type: ignore[attr-defined]
        info.needed, info.rpath, info.runpath = tuple(needed), tuple(rpath), tuple(runpath)
        pie = any(t.entry.d_tag == "DT_FLAGS_1" and t.entry.d_val & DF_1_PIE
                  for t in section.iter_tags())
        # A PIE is ET_DYN with an interpreter. Some libraries also carry one so that they can be
        # run (libc.so.6, libcap.so.2 print their version): those have a SONAME and no DF_1_PIE.
        if elf["e_type"] == "ET_DYN" and has_interp and (pie or not info.soname):
            info.kind = "executable"
    from auditwheel.elfutils import elf_find_versioned_symbols

    info.versions = tuple(elf_find_versioned_symbols(elf))
    return info


def elf_problems(fh: IO[bytes], size: int) -> list[str]:
    """Why an ELF file is not one a loader would map (empty when it is sane).

    Checks the header against the file before pyelftools follows any offset: a 64-byte
    header alone, or tables that end past the file, are what truncation and forgery produce.
    """
    elf = ELFFile(fh)
    h = elf.header
    problems: list[str] = []
    if h["e_ident"]["EI_VERSION"] != "EV_CURRENT" or h["e_version"] != "EV_CURRENT":
        problems.append("ELF version is not EV_CURRENT")
    if h["e_type"] not in ("ET_DYN", "ET_EXEC", "ET_REL"):
        problems.append(f"ELF type {h['e_type']} (a wheel ships libraries and executables)")
    want = (64, 56, 64) if elf.elfclass == 64 else (52, 32, 40)
    if h["e_ehsize"] != want[0]:
        problems.append(f"ELF header size {h['e_ehsize']}, expected {want[0]}")
    if h["e_phnum"] and h["e_phentsize"] != want[1]:
        problems.append(f"program header size {h['e_phentsize']}, expected {want[1]}")
    if h["e_phnum"] and h["e_phoff"] + h["e_phnum"] * want[1] > size:
        problems.append("program header table beyond the end of the file")
    if not h["e_shoff"]:
        problems.append("no section headers (e_shoff is 0)")
        return problems
    if h["e_shentsize"] != want[2]:
        problems.append(f"section header size {h['e_shentsize']}, expected {want[2]}")
        return problems
    if h["e_shoff"] + max(h["e_shnum"], 1) * want[2] > size:
        problems.append(f"section header table (offset {h['e_shoff']}) beyond the end of the "
                        f"file ({size} bytes)")
        return problems
    if problems:
        return problems
    nsec = elf.num_sections()
    if nsec == 0 or h["e_shoff"] + nsec * want[2] > size:
        problems.append("no section headers" if nsec == 0 else
                        "section header table beyond the end of the file")
        return problems
    shstrndx = h["e_shstrndx"]  # "SHN_XINDEX" (more than 0xff00 sections): pyelftools follows
    if shstrndx != "SHN_XINDEX" and not (isinstance(shstrndx, int) and 0 < shstrndx < nsec):
        problems.append(f"section name table index {shstrndx} out of range")
        return problems
    dynamic_section = False
    for i, section in enumerate(elf.iter_sections()):
        if section["sh_type"] != "SHT_NOBITS" and (
                section["sh_offset"] + section["sh_size"] > size):
            problems.append(f"section {i} ({section.name}) extends beyond the end of the file")
        dynamic_section |= section["sh_type"] == "SHT_DYNAMIC"
    for i in range(h["e_phnum"]):
        ph = elf.get_segment(i)
        if ph["p_offset"] + ph["p_filesz"] > size:
            problems.append(f"segment {i} ({ph['p_type']}) extends beyond the end of the file")
    if problems:
        return problems
    types = {elf.get_segment(i)["p_type"] for i in range(h["e_phnum"])}
    if h["e_type"] in ("ET_DYN", "ET_EXEC") and "PT_LOAD" not in types:
        problems.append("no loadable segment (PT_LOAD)")
    if h["e_type"] == "ET_DYN" and not ("PT_DYNAMIC" in types and dynamic_section):
        problems.append("a shared object without a .dynamic section/PT_DYNAMIC segment")
    return problems


def is_unwanted(member: str, info: ElfInfo | None) -> str | None:
    """Why a member must not ship (protoc, a test binary, a stray executable), else None."""
    base = posixpath.basename(member)
    if base == "protoc" or base.startswith("protoc-"):
        return "protoc (a build tool) inside the wheel"
    if info is None:
        return None
    stem = base.split(".", 1)[0]
    if _TEST_NAME.search(stem):
        return f"test binary ({info.kind})"
    if info.kind == "executable" and base not in ALLOWED_EXECUTABLES:
        return "executable that is not part of torch's runtime"
    return None


def manylinux_policy(t: Target) -> Any:
    """auditwheel's policy for the target's ``wheel_platform`` (whitelist, symbol versions)."""
    from auditwheel.architecture import Architecture
    from auditwheel.libc import Libc
    from auditwheel.policy import WheelPolicies

    policies = WheelPolicies(libc=Libc.GLIBC, arch=Architecture(wheel_arch_suffix(t)))
    try:
        return policies.get_policy_by_name(t.wheel_platform)
    except LookupError as exc:  # pragma: no cover - targets.toml names an unknown policy
        raise UsageError(f"auditwheel has no policy {t.wheel_platform}") from exc


def _rpath_ok(member: str, entry: str) -> str | None:
    """None if an RPATH entry is $ORIGIN-relative and stays inside the wheel, else why not."""
    m = re.match(r"^\$(ORIGIN|\{ORIGIN\})(/.*)?$", entry)
    if not m:
        return f"RPATH/RUNPATH entry {entry!r} is not relative to $ORIGIN"
    rest = (m.group(2) or "/")[1:]
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(member), rest))
    if resolved.startswith("..") or resolved == "..":
        return f"RPATH/RUNPATH entry {entry!r} points outside the wheel"
    return None


def _too_new(versions: Iterable[tuple[str, str]], allowed: dict[str, frozenset[str]],
             bundled: set[str]) -> list[str]:
    """Symbol versions (``GLIBC_2.40``) of system libraries that the policy does not allow."""
    out = set()
    for lib, version in versions:
        family, _, number = version.partition("_")
        if lib not in bundled and family in allowed and number not in allowed[family]:
            out.add(version)
    return sorted(out)


def _check_elf(info: ElfInfo, t: Target, host_machine: str | None, report: CheckReport) -> None:
    if info.machine != t.elf_machine:
        what = "the build machine" if info.machine == host_machine else "another machine"
        report.fail("machine", info.member,
                    f"built for {what} ({info.machine}), not {t.arch} ({t.elf_machine})")
        return
    if info.elf_class != 64:
        report.fail("machine", info.member, f"ELFCLASS{info.elf_class}, expected 64-bit")
    if t.elf_machine == "EM_RISCV":
        want = _RISCV_FLOAT_ABI.get(t.mabi)
        got = info.flags & _RISCV_FLOAT_ABI_MASK
        if want is not None and got != want:
            names = {v: k for k, v in _RISCV_FLOAT_ABI.items()}
            report.fail("float-abi", info.member,
                        f"float ABI {names.get(got, hex(got))}, expected {t.mabi}")


def _check_extensions(extensions: list[str], elves: dict[str, ElfInfo], soabi: str,
                      report: CheckReport) -> None:
    c_ext = [n for n in extensions if re.fullmatch(rf"{DIST_NAME}/_C\.[^/]+\.so", n)]
    if len(c_ext) != 1:
        report.fail("soabi", f"{DIST_NAME}/_C", f"expected one {DIST_NAME}/_C.{soabi}.so, "
                    f"found {c_ext or 'none'}")
    else:
        report.extension = c_ext[0]
    for name in extensions:
        tag = name.rsplit(".", 2)[-2]
        if tag != soabi:
            report.fail("soabi", name, f"extension suffix {tag!r} is not the target's {soabi!r}")
        elif name in elves and elves[name].kind != "shared object":
            report.fail("elf", name, f"an extension must be a shared object, not "
                        f"{elves[name].kind}")


def elf_section_sha256(fh: IO[bytes], name: str = ".text") -> str | None:
    """sha256 of one section's bytes (None if absent). ``.text`` survives strip and patchelf,
    so it tells which build a bundled, renamed library came from."""
    try:
        section = ELFFile(fh).get_section_by_name(name)
    except ELFError as exc:
        raise BuildError(f"not an ELF file: {exc}") from exc
    return None if section is None else hashlib.sha256(section.data()).hexdigest()


def _host_elf_machine() -> str | None:
    try:
        with open(os.path.realpath("/proc/self/exe"), "rb") as fh:
            return str(ELFFile(fh)["e_machine"])
    except (OSError, ELFError):
        return {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}.get(platform.machine())


def _is_loader(soname: str) -> bool:
    """The ELF interpreter: the board's glibc provides it (auditwheel skips it the same way)."""
    return "ld-linux" in soname or soname in ("ld64.so.1", "ld64.so.2")


# ---------------------------------------------------------------------------------------------
# build paths
# ---------------------------------------------------------------------------------------------


class BuildPathScanner:
    """Finds build paths in a stream of blocks (members can be hundreds of MB).

    ``literals`` are exact paths (the build's own directories, this machine's cache) added to
    ``BUILD_PATH_PATTERNS``. A path that directly follows a ``-f*-prefix-map=`` flag is the
    remedy recorded in torch's CXX_FLAGS and is not reported. Call ``feed`` for each block and
    ``finish`` after the last; ``found`` holds the paths (the whole path around each match).
    """

    _LEAD = max(len(f) for f in _PREFIX_MAP_FLAGS)
    _BACK = 1024  # how far back a path may start before the matched part
    _HOLD = 2048  # matches this close to a block's end wait for the next block (or finish)
    _KEEP = _BACK + _HOLD

    def __init__(self, literals: Iterable[str] = ()) -> None:
        patterns = [p.regex for p in BUILD_PATH_PATTERNS]
        self.literals = sorted({p for p in literals if p})
        patterns += [re.escape(p) for p in self.literals]
        self._any = re.compile("|".join(f"(?:{p})" for p in patterns).encode())
        self.found: set[str] = set()
        self._buf = b""
        self._base = 0  # offset in the stream of _buf[0]
        self._done = 0  # offset in the stream up to which matches have been looked at

    def feed(self, block: bytes) -> None:
        self._scan(self._buf + block, final=False)

    def finish(self) -> None:
        self._scan(self._buf, final=True)

    def _scan(self, chunk: bytes, *, final: bool) -> None:
        limit = len(chunk) if final else max(0, len(chunk) - self._HOLD)
        for m in self._any.finditer(chunk, max(0, self._done - self._base)):
            start = m.start()
            if start >= limit:
                break
            back = max(0, start - self._BACK)
            stop = max((s.end() for s in _PATH_STOP.finditer(chunk, back, start)), default=back)
            if chunk[max(0, stop - self._LEAD):stop].endswith(_PREFIX_MAP_FLAGS):
                continue
            end = _PATH_STOP.search(chunk, start)
            path = chunk[stop:end.start() if end else len(chunk)][:160]
            self.found.add(path.decode("utf-8", "replace"))
        self._done = self._base + limit
        keep = chunk[-self._KEEP:]
        self._base += len(chunk) - len(keep)
        self._buf = keep


# ---------------------------------------------------------------------------------------------
# zip members
# ---------------------------------------------------------------------------------------------


def unsafe_name(name: str) -> str | None:
    """Why a member name could be written outside the install directory (or is not
    canonical), else None."""
    if not name:
        return "empty member name"
    if re.search(r"[\x00-\x1f\x7f]", name):
        return "control character in the member name"
    if "\\" in name:
        return "backslash in the member name (a path separator on Windows: '..\\' escapes)"
    if name.startswith("/"):
        return "absolute path: it would be written outside the install directory"
    parts = name.split("/")
    if name.endswith("/"):
        parts = parts[:-1]
    if ".." in parts:
        return "'..' component: it would be written outside the install directory"
    if "." in parts:
        return "'.' component in the member name"
    if "" in parts:
        return "empty path component ('//') in the member name"
    return None


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member is not a plain file or directory (from the Unix mode in external_attr).

    Archives written on other systems carry no mode (0): those entries are plain files.
    """
    kind = stat.S_IFMT(info.external_attr >> 16)
    if info.filename.endswith("/"):
        return None if kind in (0, stat.S_IFDIR) else f"directory entry with file type {kind:o}"
    if kind in (0, stat.S_IFREG, stat.S_IFLNK):  # symlinks: _symlink_problem, with the target
        return None
    names = {stat.S_IFDIR: "directory mode on a file entry", stat.S_IFCHR: "character device",
             stat.S_IFBLK: "block device", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}
    return names.get(kind, f"unknown file type {kind:o}") + " (a wheel holds plain files)"


def _symlink_problem(name: str, target: bytes) -> str:
    dest = target.decode("utf-8", "replace")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), dest))
    if dest.startswith("/") or resolved == ".." or resolved.startswith("../"):
        return f"symlink to {dest!r} escapes the install directory"
    return (f"symlink to {dest!r}: installers write it as a file holding that name "
            "(a wheel holds plain files)")


@dataclass
class _Member:
    """What one read of a member gave: its digest and size, or why it could not be read."""

    digest: str = ""
    size: int = 0
    error: str = ""


def _check_zip_entries(infos: list[zipfile.ZipInfo], report: CheckReport) -> set[int]:
    """Names, types, duplicates, compression and encryption. Returns the indexes not to read."""
    skip: set[int] = set()
    counts = Counter(i.filename for i in infos)
    for name, n in sorted(counts.items()):
        if n > 1:
            report.fail("zip", name, f"duplicate member name ({n} entries; an installer "
                        "writes one of them, which one is up to it)")
    dirs = {posixpath.dirname(i.filename.rstrip("/")) for i in infos}
    parents = set()
    for d in dirs:
        while d and d not in parents:
            parents.add(d)
            d = posixpath.dirname(d)
    for index, info in enumerate(infos):
        name = info.filename
        if why := unsafe_name(name) or unsafe_name(info.orig_filename):
            report.fail("path", name, why)
        if why := _entry_problem(info):
            report.fail("path", name, why)
        if not name.endswith("/") and name in parents:
            report.fail("path", name, "both a file and a directory in the wheel")
        if info.flag_bits & 0x1:
            report.fail("zip", name, "encrypted member")
            skip.add(index)
        elif info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            report.fail("zip", name, f"compression method {info.compress_type} (a wheel is "
                        "stored or deflated)")
            skip.add(index)
        elif info.file_size > MAX_MEMBER_BYTES:
            report.fail("zip", name, f"declares {info.file_size} bytes unpacked, more than "
                        f"{MAX_MEMBER_BYTES >> 30} GiB (not read)")
            skip.add(index)
    return skip


# ---------------------------------------------------------------------------------------------
# RECORD, METADATA, WHEEL
# ---------------------------------------------------------------------------------------------


def _dist_info(names: list[str], name: str, version: Version, report: CheckReport) -> str | None:
    """The one ``<name>-<version>.dist-info`` directory, or None (with a finding)."""
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    infos = sorted(t for t in tops if t.endswith(".dist-info"))
    ours = []
    for d in infos:
        dname, _, dver = d.removesuffix(".dist-info").partition("-")
        try:
            if canonicalize_name(dname) == canonicalize_name(name) and Version(dver) == version:
                ours.append(d)
        except InvalidVersion:
            pass
    if len(infos) != 1 or len(ours) != 1:
        report.fail("metadata", "", f"expected one {name}-{version}.dist-info directory, found "
                    f"{infos or 'none'}")
        return None
    for d in sorted(t for t in tops if t.endswith(".data")):
        if d.removesuffix(".data") != ours[0].removesuffix(".dist-info"):
            report.fail("metadata", d, "a .data directory of another distribution")
    for n in names:
        top, _, rest = n.partition("/")
        scheme = rest.split("/", 1)[0]
        if top.endswith(".data") and rest and scheme not in _DATA_SCHEMES:
            report.fail("metadata", n, f"unknown .data scheme {scheme!r}")
    return ours[0]


def _verify_record(record_name: str, data: bytes, members: dict[str, _Member],
                   report: CheckReport) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        report.fail("record", record_name, f"RECORD is not UTF-8 ({exc.reason} at byte "
                    f"{exc.start})")
        return
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        report.fail("record", record_name, f"RECORD is not CSV: {exc}")
        return
    exempt = {f"{posixpath.dirname(record_name)}/{n}" for n in _RECORD_EXEMPT}
    listed: set[str] = set()
    for line, row in enumerate(rows, 1):
        if not row:
            continue
        if len(row) != 3:
            report.fail("record", row[0], f"RECORD line {line} has {len(row)} field(s), "
                        "expected 3 fields (path,hash,size)")
            continue
        path, digest, size = row
        if path in listed:
            report.fail("record", path, f"listed twice in RECORD (line {line})")
            continue
        listed.add(path)
        if path in exempt:
            if path == record_name and (digest or size):
                report.fail("record", path, "RECORD's own row must have no hash and no size")
            continue
        algo, sep, value = digest.partition("=")
        if algo != "sha256" or not sep or not value:
            report.fail("record", path, f"RECORD hash {digest!r} is not sha256=<digest>")
            continue
        if not re.fullmatch(r"[0-9]+", size):
            report.fail("record", path, f"RECORD size {size!r} is not a number of bytes")
            continue
        member = members.get(path)
        if member is None:
            report.fail("record", path, "listed in RECORD but missing from the wheel")
            continue
        if member.error:
            continue  # already a finding: the content could not be read
        if value != member.digest:
            report.fail("record", path, "content does not match its RECORD sha256")
        elif int(size) != member.size:
            report.fail("record", path, f"size {member.size}, RECORD says {size}")
    for path in sorted(members):
        if path not in listed and path not in exempt:
            report.fail("record", path, "not listed in RECORD")


def _utf8(data: bytes, member: str, report: CheckReport) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        report.fail("metadata", member, f"not UTF-8 ({exc.reason} at byte {exc.start})")
        return None


def _check_metadata(member: str, data: bytes, version: Version, report: CheckReport) -> None:
    """Core metadata, validated by packaging.metadata, naming this wheel's distribution."""
    text = _utf8(data, member, report)
    if text is None:
        return
    raw, unparsed = parse_email(text)
    for key in sorted(unparsed):
        report.fail("metadata", member, f"field {key.lower()!r} is repeated, malformed or "
                    "unknown")
    declared = raw.get("metadata_version")
    if declared not in _METADATA_VERSIONS:
        report.fail("metadata", member, f"Metadata-Version {declared!r} is not one of "
                    f"{', '.join(_METADATA_VERSIONS)}")
        return
    # Fields are validated as of the newest version: setuptools wrote License-File and Dynamic
    # under Metadata-Version 2.1 for years, and every installer reads them.
    try:
        meta = Metadata.from_raw({**raw, "metadata_version": "2.4"}, validate=True)
    except ExceptionGroup as group:
        for exc in group.exceptions:
            report.fail("metadata", member, str(exc))
        return
    except InvalidMetadata as exc:
        report.fail("metadata", member, str(exc))
        return
    if canonicalize_name(meta.name) != DIST_NAME:
        report.fail("metadata", member, f"Name is {meta.name!r}, expected {DIST_NAME!r}")
    if meta.version != version:
        report.fail("metadata", member,
                    f"Version {meta.version} differs from the file name's {version}")


def _check_wheel_file(member: str, data: bytes, tags: frozenset[Tag],
                      build: tuple[()] | tuple[int, str], report: CheckReport) -> None:
    """WHEEL: ``Key: value`` lines; Wheel-Version 1.x, Root-Is-Purelib false, the file's tags."""
    text = _utf8(data, member, report)
    if text is None:
        return
    msg = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text)
    payload = msg.get_payload()
    if msg.defects or (isinstance(payload, str) and payload.strip()):
        report.fail("metadata", member, "WHEEL is not a list of 'Key: value' lines")

    def one(key: str) -> str | None:
        values = msg.get_all(key) or []
        if len(values) != 1:
            report.fail("metadata", member, f"{key} appears {len(values)} times, expected once")
            return None
        return str(values[0]).strip()

    wheel_version = one("Wheel-Version")
    if wheel_version is not None:
        m = re.fullmatch(r"(\d+)\.(\d+)", wheel_version)
        if not m or int(m.group(1)) != 1:
            report.fail("metadata", member, f"Wheel-Version {wheel_version!r}: installers "
                        "read 1.x only")
    purelib = one("Root-Is-Purelib")
    if purelib is not None and purelib.lower() != "false":
        report.fail("metadata", member, f"Root-Is-Purelib is {purelib!r}; it must be false "
                    "for a binary wheel")
    info_tags: set[str] = set()
    for value in msg.get_all("Tag") or []:
        try:
            info_tags |= {str(t) for t in parse_tag(str(value).strip())}
        except ValueError:
            report.fail("metadata", member, f"Tag {str(value).strip()!r} is not a wheel tag")
            return
    if info_tags != {str(t) for t in tags}:
        report.fail("metadata", member,
                    f"Tag lines {sorted(info_tags)} differ from the file name's tags")
    builds = [str(b).strip() for b in msg.get_all("Build") or []]
    want = [f"{build[0]}{build[1]}"] if build else []
    if builds != want:
        report.fail("metadata", member, f"Build {builds} differs from the file name's {want}")


# ---------------------------------------------------------------------------------------------
# check_wheel
# ---------------------------------------------------------------------------------------------


def check_wheel(path: Path | str, arch: str | Target | None = None, *,
                build_paths: Sequence[str] = ()) -> CheckReport:
    """Check a wheel for ``arch`` (default: the arch its platform tag names).

    Reads every member once, streaming (sha256, CRC, build paths); ELF members are copied to one
    temp file in turn for pyelftools, which seeks. Nothing is extracted under a member's name.
    Returns a report; ``report.ok`` is the verdict. A missing file (or a file name that names
    no target, without ``arch``) is a usage error; anything wrong with the file is a finding.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: {'not a file' if path.exists() else 'no such wheel file'}")
    t = _target(arch if arch is not None else arch_of_wheel(path))
    report = CheckReport(wheel=path.name, arch=t.arch, size_bytes=path.stat().st_size)
    try:
        name, version, build, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        report.fail("name", "", f"not a valid wheel file name: {exc}")
        return report
    report.name, report.version = str(name), str(version)
    report.tags = sorted(str(tag) for tag in tags)
    _check_name_and_tags(t, name, version, tags, report)
    try:
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        report.fail("zip", "", f"not a readable zip archive: {type(exc).__name__}: {exc}")
        return report
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        files = [i for i in infos if not i.filename.endswith("/")]
        report.file_count = len(files)
        report.unpacked_bytes = sum(i.file_size for i in infos)
        report.largest = sorted(((i.filename, i.file_size) for i in files),
                                key=lambda x: -x[1])[:5]
        skip = _check_zip_entries(infos, report)
        dist_info = _dist_info(names, name, version, report)
        keep = ({f"{dist_info}/RECORD", f"{dist_info}/METADATA", f"{dist_info}/WHEEL"}
                if dist_info else set())
        kept: dict[str, bytes] = {}
        members = _read_members(zf, infos, skip, keep, kept, t, build_paths, report)
    if dist_info:
        record = f"{dist_info}/RECORD"
        if record not in kept:
            report.fail("record", record, "missing")
        else:
            _verify_record(record, kept[record], members, report)
        for member, check in ((f"{dist_info}/METADATA", "m"), (f"{dist_info}/WHEEL", "w")):
            if member not in kept:
                report.fail("metadata", member, "missing")
            elif check == "m":
                _check_metadata(member, kept[member], version, report)
            else:
                _check_wheel_file(member, kept[member], tags, build, report)
    report.findings.sort(key=lambda f: _CHECK_ORDER.get(f.check, len(_CHECK_ORDER)))
    return report


def _check_name_and_tags(t: Target, name: str, version: Version, tags: frozenset[Tag],
                         report: CheckReport) -> None:
    if name != DIST_NAME:
        report.fail("name", "", f"distribution is {name!r}; it must be {DIST_NAME!r} so that "
                    "packages requiring torch accept it")
    if not version.local or t.arch not in version.local.split("."):
        report.fail("version", "", f"version {version} needs a local label naming the target "
                    f"(e.g. {version.base_version}+{t.arch})")
    py = matrix().project.python_tag
    suffix = "_" + wheel_arch_suffix(t)
    for tag in tags:
        if tag.interpreter != py or tag.abi != py:
            report.fail("tag", "", f"tag {tag} is not {py}-{py}: the wheel holds a "
                        "CPython extension built for one Python")
        if not tag.platform.endswith(suffix):
            report.fail("tag", "", f"platform tag {tag.platform} is not for {t.arch}")


def _read_members(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], skip: set[int],
                  keep: set[str], kept: dict[str, bytes], t: Target,
                  build_paths: Sequence[str], report: CheckReport) -> dict[str, _Member]:
    """Read every file member to its end (zipfile checks the CRC there), hashing it, scanning
    ELF and text members for build paths and checking each ELF. Returns {name: _Member}."""
    host_machine = _host_elf_machine()
    literals = [*build_paths, str(cache_dir(create=False)) + "/"]
    members: dict[str, _Member] = {}
    elves: dict[str, ElfInfo] = {}
    extensions: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rvtorch-check-") as tmp:
        spill = Path(tmp) / "member"
        for index, info in enumerate(infos):
            name = info.filename
            if name.endswith("/"):
                if index not in skip:
                    _read_directory_entry(zf, info, report)
                continue
            member = members[name] = _Member()
            if index in skip:
                member.error = "not read"
                continue
            link = stat.S_ISLNK(info.external_attr >> 16)
            h = hashlib.sha256()
            scanner: BuildPathScanner | None = None
            is_elf = False
            head = bytearray()
            try:
                with zf.open(info) as src, _spill(spill) as dst:
                    first = True
                    while block := src.read(1 << 20):
                        if first:
                            first = False
                            is_elf = block[:4] == b"\x7fELF"
                            if is_elf or name.endswith(TEXT_SUFFIXES):
                                scanner = BuildPathScanner(literals)
                        h.update(block)
                        member.size += len(block)
                        if scanner is not None:
                            scanner.feed(block)
                        if is_elf:
                            _write(dst, block, spill)
                        if (name in keep or link) and len(head) < (64 << 20):
                            head += block
            except _ZIP_ERRORS as exc:
                member.error = f"{type(exc).__name__}: {exc}"
                report.fail("zip", name, f"unreadable member (bad CRC or data): {member.error}")
                continue
            member.digest = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
            if name in keep:
                kept[name] = bytes(head)
            if link:
                report.fail("path", name, _symlink_problem(name, bytes(head[:_LINK_MAX])))
            if scanner is not None:
                scanner.finish()
            for found in sorted(scanner.found if scanner else ()):
                report.fail("build-path", name, f"contains the build path {found!r}")
            if not is_elf:
                if why := is_unwanted(name, None):
                    report.fail("unwanted", name, why)
                continue
            elf = _read_elf(name, spill, member.size, report)
            if elf is None:
                continue
            elves[name] = elf
            _check_elf(elf, t, host_machine, report)
            if why := is_unwanted(name, elf):
                report.fail("unwanted", name, why)
            if re.search(r"\.cpython-[^/]*\.so$", name) or name.endswith(".abi3.so"):
                extensions.append(name)
    _check_linkage(elves, extensions, t, report)
    return members


def _spill(path: Path) -> io.FileIO:
    """The temp copy of an ELF member. Failing to write it is this machine's problem (exit 2),
    not the wheel's, so it is kept apart from the zip errors that become findings: unbuffered,
    so that a full disk fails in ``_write`` and never later in a flush at close."""
    try:
        return io.FileIO(path, "w")
    except OSError as exc:
        raise _temp_error(path, exc) from exc


def _write(dst: io.FileIO, block: bytes, path: Path) -> None:
    view = memoryview(block)
    try:
        while view:
            written = dst.write(view)
            if not written:  # a regular file never takes nothing; do not spin
                raise OSError(errno.EIO, "no progress writing")
            view = view[written:]
    except OSError as exc:
        raise _temp_error(path, exc) from exc


def _temp_error(path: Path, exc: OSError) -> UsageError:
    return UsageError(f"cannot write {path}: {exc.strerror or exc}",
                      hint="free space in the temp directory or set TMPDIR")


def _read_directory_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo,
                          report: CheckReport) -> None:
    """A directory entry is read too: its local header must be intact, its data empty."""
    try:
        with zf.open(info) as fh:
            data = fh.read(1)
    except _ZIP_ERRORS as exc:
        report.fail("zip", info.filename, f"unreadable member: {type(exc).__name__}: {exc}")
        return
    if data:
        report.fail("path", info.filename, "directory entry with data")


def _read_elf(name: str, spill: Path, size: int, report: CheckReport) -> ElfInfo | None:
    """The member's ELF facts, or None with an ``elf`` finding when it is not a sane ELF."""
    try:
        with spill.open("rb") as fh:
            problems = elf_problems(fh, size)
            if problems:
                report.fail("elf", name, "; ".join(problems))
                return None
            fh.seek(0)
            return _elf_info(name, fh)
    except Exception as exc:  # pyelftools on forged input raises anything
        # (ELFError, ELFParseError, struct.error, IndexError, UnicodeDecodeError, ...): it has
        # no error contract for malformed files, and a damaged ELF is a finding, not a crash.
        report.fail("elf", name, f"unreadable ELF ({type(exc).__name__}: {exc})")
        return None


def _check_linkage(elves: dict[str, ElfInfo], extensions: list[str], t: Target,
                   report: CheckReport) -> None:
    """SOABI, RPATHs, needed libraries and symbol versions across the wheel's ELF files."""
    policy = manylinux_policy(t)
    whitelist: frozenset[str] = policy.whitelist
    allowed_versions: dict[str, frozenset[str]] = dict(policy.symbol_versions)
    report.elf_count = len(elves)
    report.bundled_libs = sorted(n for n in elves if f"{DIST_NAME}{LIB_SDIR}/" in n)
    _check_extensions(extensions, elves, expected_soabi(t), report)
    provided = {posixpath.basename(n) for n in elves}
    provided |= {i.soname for i in elves.values() if i.soname}
    for info in elves.values():
        for entry in (*info.rpath, *info.runpath):
            if why := _rpath_ok(info.member, entry):
                report.fail("rpath", info.member, why)
        if too_new := _too_new(info.versions, allowed_versions, provided):
            report.fail("symbols", info.member,
                        f"needs {', '.join(too_new)}, newer than {t.wheel_platform} allows "
                        "(a board with the policy's glibc would fail to load it)")
        for lib in info.needed:
            if lib not in provided and lib not in whitelist and not _is_loader(lib):
                report.fail("needed", info.member,
                            f"needs {lib}, which is neither bundled nor allowed by "
                            f"{t.wheel_platform} (a board would fail to load it)")
