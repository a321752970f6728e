"""``rvtorch check-wheel`` as a validator of hostile wheels (issue 14, items 1-3).

Every wheel here starts as one that passes (tests/wheelkit.py ``valid_entries``) and gets one
defect; the command must exit 4 with one ``rvtorch: error:`` line on stderr that names it, and
never a traceback. The CLI runs in-process (``cli.main``) for speed; ``test_cli_process`` runs
the real ``python -m rvtorch`` for the same contract.
"""

from __future__ import annotations

import stat
import struct
import zipfile
from pathlib import Path

import pytest

from rvtorch import cli
from rvtorch.wheelcheck import BUILD_PATH_PATTERNS, check_wheel
from tests.conftest import run_cli
from tests.wheelkit import (
    REGULAR,
    Entry,
    record_digest,
    shared_object,
    target_extension,
    valid_entries,
    valid_wheel,
    with_record,
    write_entries,
)

WHEEL_NAME = "torch-2.6.0+riscv64-cp313-cp313-manylinux_2_39_riscv64.whl"
DIST = "torch-2.6.0+riscv64.dist-info"
C_EXT, _ = target_extension("riscv64")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["check-wheel", *args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_fails(capsys: pytest.CaptureFixture[str], wheel: Path, *needles: str) -> str:
    """Exit 4, one stderr line, naming each needle; returns that line."""
    code, _out, err = run(capsys, str(wheel))
    lines = err.strip().splitlines()
    assert code == 4, err
    assert len(lines) == 1 and lines[0].startswith("rvtorch: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def wheel_of(tmp_path: Path, entries: list[Entry], *, record: bool = True) -> Path:
    return write_entries(with_record(entries) if record else entries, tmp_path / WHEEL_NAME)


def replace(entries: list[Entry], name: str, data: bytes) -> list[Entry]:
    return [Entry(e.name, data, e.mode, e.compress_type) if e.name == name else e
            for e in entries]


def test_the_valid_wheel_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(valid_wheel(tmp_path)))
    assert (code, err) == (0, ""), out + err
    assert "all checks passed" in out


# --- 1: members that would land outside the install directory --------------------------------

@pytest.mark.parametrize("member", ["../evil.py", "/evil_abs.py", "torch/../../evil2"])
def test_member_outside_the_install_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        member: str) -> None:
    """Issue 14.1: listed in RECORD with the right hash, so only the path itself is wrong."""
    wheel = wheel_of(tmp_path, [*valid_entries(), Entry(member, b"import os\n")])
    assert_fails(capsys, wheel, "[path]", member)


@pytest.mark.parametrize(("member", "why"), [
    ("torch/./x.py", "'.'"),
    ("torch//x.py", "empty"),
    ("torch\\..\\..\\evil.py", "backslash"),
    ("torch/x\nimport.py", "control"),
])
def test_non_canonical_member_names(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    member: str, why: str) -> None:
    wheel = wheel_of(tmp_path, [*valid_entries(), Entry(member, b"")])
    assert_fails(capsys, wheel, "[path]", why)


@pytest.mark.parametrize(("target", "needle"), [
    ("../../../../etc/passwd", "escapes"),
    ("/etc/passwd", "escapes"),
    ("__init__.py", "symlink"),
])
def test_symlink_entries(tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str,
                         needle: str) -> None:
    """A wheel holds files; an installer writes a symlink entry as a file holding its target."""
    link = Entry("torch/link.py", target.encode(), stat.S_IFLNK | 0o777)
    assert_fails(capsys, wheel_of(tmp_path, [*valid_entries(), link]), "[path]", needle)


@pytest.mark.parametrize("kind", [stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK])
def test_device_and_fifo_entries(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 kind: int) -> None:
    dev = Entry("torch/dev0", b"", kind | 0o644)
    assert_fails(capsys, wheel_of(tmp_path, [*valid_entries(), dev]), "[path]", "torch/dev0")


def test_duplicate_member_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """zipfile keeps the last of two same-named members; an installer may write either."""
    entries = valid_entries()
    wheel = wheel_of(tmp_path, [*entries, Entry("torch/__init__.py", b"import os\n")],
                     record=False)
    assert_fails(capsys, wheel, "duplicate", "torch/__init__.py")


def test_a_file_that_is_also_a_directory(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    wheel = wheel_of(tmp_path, [*valid_entries(), Entry("torch/__init__.py/x.py", b"")])
    assert_fails(capsys, wheel, "[path]", "torch/__init__.py")


# --- 2: damaged input: clean failures, never a traceback -------------------------------------

def test_bad_crc_inside_an_intact_central_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 14.2: a stored member with one byte changed; the directory still parses."""
    entries = [Entry(e.name, e.data, e.mode, zipfile.ZIP_STORED) for e in valid_entries()]
    wheel = wheel_of(tmp_path, entries)
    raw = bytearray(wheel.read_bytes())
    at = raw.index(b"from torch._C import")
    raw[at] ^= 0x20
    wheel.write_bytes(bytes(raw))
    with zipfile.ZipFile(wheel) as zf:  # the central directory is intact
        assert "torch/__init__.py" in zf.namelist()
    assert_fails(capsys, wheel, "[zip]", "torch/__init__.py")


def test_bad_compressed_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 14.2: a deflate stream broken in the middle (zlib.error, not only a bad CRC)."""
    wheel = valid_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo(C_EXT)
    raw = bytearray(wheel.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode())
    for i in range(start, start + info.compress_size // 2):
        raw[i] = 0xFF
    wheel.write_bytes(bytes(raw))
    assert_fails(capsys, wheel, "[zip]", C_EXT)


@pytest.mark.parametrize(("row", "needle"), [
    ("torch/__init__.py,{digest}", "3 fields"),
    ("torch/__init__.py", "3 fields"),
    ("torch/__init__.py,{digest},thirty-seven", "size"),
    ("torch/__init__.py,{digest},-37", "size"),
    ("torch/__init__.py,md5=abc,37", "sha256"),
])
def test_malformed_record_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str], row: str,
                               needle: str) -> None:
    """Issue 14.2: short and non-numeric rows gave IndexError/ValueError tracebacks."""
    entries = valid_entries()
    init = next(e for e in entries if e.name == "torch/__init__.py")
    record_name = f"{DIST}/RECORD"
    record = next(e for e in entries if e.name == record_name).data.decode()
    lines = [row.format(digest=record_digest(init.data)) if ln.startswith("torch/__init__.py,")
             else ln for ln in record.splitlines()]
    wheel = wheel_of(tmp_path, replace(entries, record_name, "\n".join(lines).encode()),
                     record=False)
    assert_fails(capsys, wheel, "[record]", needle)


def test_record_must_list_every_member(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    entries = valid_entries()
    record_name = f"{DIST}/RECORD"
    record = next(e for e in entries if e.name == record_name).data.decode()
    kept = "\n".join(ln for ln in record.splitlines() if not ln.startswith("torch/lib/"))
    wheel = wheel_of(tmp_path, replace(entries, record_name, kept.encode()), record=False)
    assert_fails(capsys, wheel, "[record]", "torch/lib/README.txt")


@pytest.mark.parametrize("encoding", ["cp1252", "utf-16"])
def test_metadata_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   encoding: str) -> None:
    """Issue 14.2: UnicodeDecodeError traceback. RECORD is right: only the encoding is wrong."""
    entries = valid_entries()
    meta = next(e for e in entries if e.name == f"{DIST}/METADATA")
    text = meta.data.decode()
    wheel = wheel_of(tmp_path, replace(entries, meta.name, text.encode(encoding, "replace")))
    assert_fails(capsys, wheel, "[metadata]", "UTF-8")


@pytest.mark.parametrize(("member", "text", "needle"), [
    ("METADATA", "Metadata-Version: 2.1\nVersion: 2.6.0+riscv64\n", "name"),
    ("METADATA", "Metadata-Version: 2.1\nName: torch\nVersion: 2.6.0+riscv64\n"
     "Name: torch-two\n", "name"),
    ("METADATA", "Metadata-Version: 9.9\nName: torch\nVersion: 2.6.0+riscv64\n", "9.9"),
    ("METADATA", "Metadata-Version: 2.1\nName: torch\nVersion: two\n", "two"),
    ("WHEEL", "Generator: x\nRoot-Is-Purelib: false\n"
     "Tag: cp313-cp313-manylinux_2_39_riscv64\n", "Wheel-Version"),
    ("WHEEL", "Wheel-Version: 2.0\nRoot-Is-Purelib: false\n"
     "Tag: cp313-cp313-manylinux_2_39_riscv64\n", "Wheel-Version"),
    ("WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
     "Tag: cp313-cp313-manylinux_2_39_riscv64\n", "Root-Is-Purelib"),
    ("WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\n"
     "Tag: cp313-cp313-manylinux_2_39_aarch64\n", "Tag"),
    ("WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: not a tag\n", "Tag"),
])
def test_metadata_and_wheel_parsed_strictly(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            member: str, text: str, needle: str) -> None:
    wheel = wheel_of(tmp_path, replace(valid_entries(), f"{DIST}/{member}", text.encode()))
    assert_fails(capsys, wheel, "[metadata]", needle)


def test_two_dist_info_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = Entry("numpy-2.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: numpy\n")
    assert_fails(capsys, wheel_of(tmp_path, [*valid_entries(), extra]), "dist-info")


def header_only_elf() -> bytes:
    """The 64-byte ELF header of a riscv64 lp64d shared object, and nothing after it."""
    from elftools.elf.enums import ENUM_E_MACHINE

    return struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, b"\0" * 7,
                       3, ENUM_E_MACHINE["EM_RISCV"], 1, 0, 0, 0, 5, 64, 56, 0, 64, 0, 0)


def test_header_only_elf_is_not_an_extension(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 14.2: the 64-byte header passed as torch/_C."""
    assert len(header_only_elf()) == 64
    wheel = wheel_of(tmp_path, replace(valid_entries(), C_EXT, header_only_elf()))
    assert_fails(capsys, wheel, "[elf]", C_EXT, "section headers")


def test_elf_tables_beyond_the_end_of_the_file(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _, good = target_extension()
    cut = good[: len(good) - 64]  # the last section header is gone
    wheel = wheel_of(tmp_path, replace(valid_entries(), C_EXT, cut))
    assert_fails(capsys, wheel, "[elf]", "beyond the end")


def test_shared_object_without_dynamic_section(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _, good = target_extension()
    shoff = struct.unpack_from("<Q", good, 40)[0]
    broken = bytearray(good)
    struct.pack_into("<I", broken, shoff + 2 * 64 + 4, 1)  # .dynamic becomes SHT_PROGBITS
    wheel = wheel_of(tmp_path, replace(valid_entries(), C_EXT, bytes(broken)))
    assert_fails(capsys, wheel, "[elf]", ".dynamic")


# --- 3: build paths of any machine, not only the checker's own cache --------------------------

FOREIGN_PATHS = [
    "/root/.cache/rvtorch/trees/torch-2.6.0-debian-abc-riscv64/src/aten/x.cpp",
    "/home/ci/.cache/rvtorch/sources/pytorch",
    "/home/ci/pytorch/build/aten/src/ATen/ops.cpp",
    "/__w/pytorch/pytorch/build/aten/src/ATen/core/TensorBody.h",
    "/tmp/pip-req-build-k2j3/torch/csrc/stub.c",
    "/rvtorch/src/torch/csrc/Module.cpp",
    "/srv/x/build/temp.linux-riscv64-cpython-313/torch/csrc/stub.o",
    "/usr/src/pytorch/c10/util/Logging.cpp",
]


@pytest.mark.parametrize("leak", FOREIGN_PATHS)
def test_foreign_build_paths_in_elf_strings(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch, leak: str) -> None:
    """Issue 14.3: whatever machine checks it (here: a cache somewhere else entirely)."""
    monkeypatch.setenv("RVTORCH_CACHE", str(tmp_path / "elsewhere"))
    lib = shared_object("EM_RISCV", 5, "libtorch_cpu.so") + b"\0" + leak.encode() + b"\0"
    wheel = wheel_of(tmp_path, [*valid_entries(), Entry("torch/lib/libtorch_cpu.so", lib)])
    assert_fails(capsys, wheel, "[build-path]", "torch/lib/libtorch_cpu.so")


def test_foreign_build_path_in_a_text_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RVTORCH_CACHE", str(tmp_path / "elsewhere"))
    cmake = Entry("torch/share/cmake/Torch/TorchConfig.cmake",
                  b'set(TORCH_INSTALL_PREFIX "/home/ci/pytorch/build/install")\n')
    assert_fails(capsys, wheel_of(tmp_path, [*valid_entries(), cmake]), "[build-path]")


@pytest.mark.parametrize("text", [
    "-ffile-prefix-map=/rvtorch/src=. -O2",  # the remedy, recorded in torch's CXX_FLAGS
    "https://github.com/pytorch/builder/blob/main/README.md",
    "# for full path = '/home/weif/pytorch/test.py'",  # torch/fx/passes/graph_drawer.py
    "/tmp/torch_extensions/py313_cpu",  # torch's own default for JIT-built extensions
])
def test_what_is_not_a_build_path(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  text: str) -> None:
    lib = shared_object("EM_RISCV", 5, "libtorch_cpu.so") + b"\0" + text.encode() + b"\0"
    wheel = wheel_of(tmp_path, [*valid_entries(), Entry("torch/lib/libtorch_cpu.so", lib)])
    code, out, err = run(capsys, str(wheel))
    assert (code, err) == (0, ""), out + err


def test_patterns_are_documented() -> None:
    """docs/wheel.md lists every pattern the checker uses (one list, in wheelcheck.py)."""
    doc = (Path(__file__).resolve().parents[2] / "docs/wheel.md").read_text()
    for pattern in BUILD_PATH_PATTERNS:
        assert f"`{pattern.example}`" in doc, pattern.example


# --- unreadable input and the process contract ----------------------------------------------

def test_not_a_zip_and_truncated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / WHEEL_NAME
    bogus.write_bytes(b"not a zip")
    assert_fails(capsys, bogus, "[zip]")
    good = valid_wheel(tmp_path / "g").read_bytes()
    bogus.write_bytes(good[: len(good) // 2])
    assert_fails(capsys, bogus, "[zip]")


def central_entry(raw: bytes, name: str) -> int:
    """Offset of ``name``'s central directory header (signature PK\\1\\2, name at +46)."""
    at = raw.index(b"PK\x01\x02")
    while raw[at + 46:at + 46 + len(name)] != name.encode():
        at = raw.index(b"PK\x01\x02", at + 4)
    return at


def test_unsupported_compression_and_encryption(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    wheel = valid_wheel(tmp_path)
    raw = bytearray(wheel.read_bytes())
    at = central_entry(bytes(raw), "torch/lib/README.txt")
    struct.pack_into("<H", raw, at + 10, 9)  # deflate64: zipfile cannot read it
    wheel.write_bytes(bytes(raw))
    assert_fails(capsys, wheel, "[zip]", "compression")
    struct.pack_into("<H", raw, at + 10, 8)
    struct.pack_into("<H", raw, at + 8, 1)  # the "encrypted" flag
    wheel.write_bytes(bytes(raw))
    assert_fails(capsys, wheel, "[zip]", "encrypted")


def test_a_member_declaring_a_huge_size_is_not_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A decompression bomb's directory entry is refused before any byte is inflated (the
    limit is lowered to 1 GiB so that a 32-bit size field can exceed it)."""
    from rvtorch import wheelcheck

    monkeypatch.setattr(wheelcheck, "MAX_MEMBER_BYTES", 1 << 30)
    wheel = valid_wheel(tmp_path)
    raw = bytearray(wheel.read_bytes())
    at = central_entry(bytes(raw), "torch/lib/README.txt")
    struct.pack_into("<I", raw, at + 24, 0xFFFFFFFE)  # uncompressed size: 4 GiB - 2
    wheel.write_bytes(bytes(raw))
    assert_fails(capsys, wheel, "[zip]", "torch/lib/README.txt", "not read")


def test_check_wheel_api_reports_instead_of_raising(tmp_path: Path) -> None:
    """build.py calls check_wheel(path, target, build_paths=...) and reads report.ok."""
    wheel = wheel_of(tmp_path, [*valid_entries(), Entry("../evil.py", b"")])
    report = check_wheel(wheel, "riscv64", build_paths=["/nowhere"])
    assert not report.ok and {f.check for f in report.findings} == {"path"}


def test_cli_process(tmp_path: Path) -> None:
    """The real process: exit 4, the one error line first, no traceback."""
    wheel = wheel_of(tmp_path, [*valid_entries(), Entry("/evil_abs.py", b"")])
    proc = run_cli("check-wheel", str(wheel))
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("rvtorch: error: ") and "/evil_abs.py" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert run_cli("check-wheel", str(valid_wheel(tmp_path / "ok"))).returncode == 0


def test_regular_mode_without_type_bits_is_a_file(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Zips written on other systems carry no Unix mode (external_attr >> 16 == 0)."""
    entries = [Entry(e.name, e.data, 0 if e.mode == REGULAR else e.mode, e.compress_type)
               for e in valid_entries()]
    code, out, err = run(capsys, str(wheel_of(tmp_path, entries)))
    assert (code, err) == (0, ""), out + err


def test_a_temp_copy_that_cannot_be_written_is_this_machines_problem(tmp_path: Path) -> None:
    """An ELF member is copied to a temp file for pyelftools. A full disk there (here: a file
    size limit, EFBIG) is an environment error (exit 2), not a verdict on the wheel."""
    import resource
    import subprocess
    import sys

    wheel = valid_wheel(tmp_path)

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (256, 256))  # the riscv64 _C is 592 bytes

    proc = subprocess.run([sys.executable, "-m", "rvtorch", "check-wheel", str(wheel)],
                          capture_output=True, text=True, preexec_fn=small_files, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("rvtorch: error: cannot write ")


def test_the_error_line_names_the_most_basic_finding(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """An unsafe member in a wheel that also lacks _C: the line says [path], not [soabi]."""
    entries = [e for e in valid_entries() if e.name != C_EXT]
    line = assert_fails(capsys, wheel_of(tmp_path, [*entries, Entry("../evil.py", b"")]))
    assert "fails 2 check(s): [path] ../evil.py" in line


def test_control_characters_from_the_wheel_stay_on_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by the property test: a flipped byte made DT_NEEDED 'libc.s\\x1e.6', and
    str.splitlines() splits on \\x1e. Strings from the wheel are printed escaped."""
    lib = shared_object("EM_RISCV", 5, "libx.so", ["libc.s\x1e.6", "libd\u2028.so"])
    line = assert_fails(capsys, wheel_of(tmp_path, [*valid_entries(),
                                                    Entry("torch/lib/libx.so", lib)]), "[needed]")
    assert "libc.s\\x1e.6" in line
