"""Property test of ``rvtorch check-wheel``: a valid wheel, mutated at random (Hypothesis).

For every mutation the command must return (no exception: the in-process ``cli.main`` would
raise it), exit 0 or 4, print exactly one ``rvtorch: error:`` line on stderr when it exits 4 and
nothing when it exits 0, and exit 0 exactly when the wheel is still valid.

"Still valid" is decided without the checker. The reference is what an installer sees: pip and
installer read wheels with zipfile, so a mutated file is valid iff zipfile gives the same
members, in the same order, with the same names, file types and contents as the original
(``view``). Byte flips the format ignores (a timestamp, a local header's copy of the CRC, the
entry count in the end record) keep the view and must pass; flips that matter change or break
it and must fail. Every mutation that rebuilds the zip changes content on purpose in a way that
makes the wheel invalid (a rename or removal RECORD does not know, an unsafe added name, a
broken RECORD row, METADATA in another encoding), so "view differs" means invalid there too.
Only byte flips inside the ELF with RECORD updated have no oracle (a flipped byte of padding is
harmless, one of e_shoff is not): for those the contract is the clean exit alone.

Profiles (``RVTORCH_HYPOTHESIS_PROFILE``): ``unit`` (default: the same 120 examples every run,
seconds) and ``long`` (3000 new examples each run, minutes; benchmarks/bench_faults.py runs it)::

    RVTORCH_HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest \\
        tests/unit/test_check_wheel_hypothesis.py -q

No example database is written (``database=None``): a failure prints its reproduction blob.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rvtorch import cli
from tests.wheelkit import Entry, record_digest, valid_entries, with_record, write_entries

_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
# The unit tier runs the same 120 examples every time (CI stays reproducible); the long profile
# draws new ones on every run, to find what the fixed set does not.
settings.register_profile("unit", max_examples=120, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=3000, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("RVTORCH_HYPOTHESIS_PROFILE", "unit"))

WHEEL_NAME = "torch-2.6.0+riscv64-cp313-cp313-manylinux_2_39_riscv64.whl"
BASE_ENTRIES = valid_entries("riscv64")
DIST = next(e.name for e in BASE_ENTRIES if e.name.endswith("/RECORD")).rsplit("/", 1)[0]
RECORD = f"{DIST}/RECORD"
METADATA = f"{DIST}/METADATA"
C_EXT = next(e.name for e in BASE_ENTRIES if e.name.endswith(".so"))
FILES = [e.name for e in BASE_ENTRIES if not e.name.endswith("/")]


def serialize(entries: list[Entry]) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return write_entries(entries, Path(tmp) / WHEEL_NAME).read_bytes()


BASE = serialize(BASE_ENTRIES)


def _kind(info: zipfile.ZipInfo) -> str:
    ftype = stat.S_IFMT(info.external_attr >> 16)
    if info.filename.endswith("/") and ftype in (0, stat.S_IFDIR):
        return "dir"
    if not info.filename.endswith("/") and ftype in (0, stat.S_IFREG):
        return "file"
    return f"type {ftype:o}"


def view(data: bytes) -> tuple[tuple[str, str, bytes], ...] | None:
    """What an installer would write: (name, kind, content) per member, or None if zipfile
    cannot read it all (the oracle may catch anything: it only has to say "unreadable")."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return tuple((i.filename, _kind(i), zf.read(i)) for i in zf.infolist())
    except Exception:
        return None


BASE_VIEW = view(BASE)


@dataclass
class Mutant:
    what: str
    data: bytes
    oracle: bool = True  # False: only the clean-exit contract applies


def check(data: bytes) -> tuple[int, str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / WHEEL_NAME
        path.write_bytes(data)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["check-wheel", str(path)])
        return code, out.getvalue(), err.getvalue()


# --- mutations -------------------------------------------------------------------------------

SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8)


@st.composite
def flip_bytes(draw: st.DrawFn) -> Mutant:
    data = bytearray(BASE)
    spots = draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=4))
    for at in spots:
        data[at] ^= draw(st.integers(1, 255))
    return Mutant(f"flip {spots}", bytes(data))


@st.composite
def flip_in_zip_structure(draw: st.DrawFn) -> Mutant:
    """Flips aimed at headers (the central directory and the end record are the last bytes)."""
    data = bytearray(BASE)
    cd = BASE.rindex(b"PK\x01\x02", 0, BASE.rindex(b"PK\x05\x06"))
    first_cd = BASE.index(b"PK\x01\x02")
    at = draw(st.one_of(st.integers(first_cd, len(data) - 1), st.integers(0, 80),
                        st.integers(cd, len(data) - 1)))
    data[at] ^= draw(st.sampled_from([0x01, 0x02, 0x08, 0x10, 0x80, 0xFF]))
    return Mutant(f"flip header byte {at}", bytes(data))


@st.composite
def truncate(draw: st.DrawFn) -> Mutant:
    n = draw(st.integers(0, len(BASE) - 1))
    return Mutant(f"truncate to {n}", BASE[:n])


@st.composite
def pad(draw: st.DrawFn) -> Mutant:
    junk = draw(st.binary(min_size=1, max_size=64))
    if draw(st.booleans()):
        return Mutant(f"append {junk!r}", BASE + junk)
    return Mutant(f"prepend {junk!r}", junk + BASE)


def _safe_name(draw: st.DrawFn) -> str:
    return "/".join(draw(st.lists(SEGMENT, min_size=1, max_size=3)))


@st.composite
def rename(draw: st.DrawFn) -> Mutant:
    old = draw(st.sampled_from(FILES))
    new = _safe_name(draw) if draw(st.booleans()) else draw(st.sampled_from(FILES))
    if new == old:
        new += "x"
    entries = [Entry(new, e.data, e.mode, e.compress_type) if e.name == old else e
               for e in BASE_ENTRIES]
    return Mutant(f"rename {old} -> {new}", serialize(entries))


@st.composite
def duplicate(draw: st.DrawFn) -> Mutant:
    src = draw(st.sampled_from(BASE_ENTRIES))
    data = draw(st.one_of(st.just(src.data), st.binary(max_size=64)))
    at = draw(st.integers(0, len(BASE_ENTRIES)))
    entries = list(BASE_ENTRIES)
    entries.insert(at, Entry(src.name, data, src.mode, src.compress_type))
    return Mutant(f"duplicate {src.name} at {at}", serialize(entries))


@st.composite
def remove(draw: st.DrawFn) -> Mutant:
    gone = draw(st.sampled_from(FILES))
    return Mutant(f"remove {gone}", serialize([e for e in BASE_ENTRIES if e.name != gone]))


@st.composite
def unsafe_name(draw: st.DrawFn) -> str:
    a, b = _safe_name(draw), _safe_name(draw)
    return draw(st.sampled_from([
        f"../{a}", f"/{a}", f"/tmp/{a}", f"torch/../../{a}", f"{a}/../../{b}", f"{a}//{b}",
        f"./{a}", f"{a}/./{b}", f"{a}\\..\\{b}", f"..\\{a}", f"{a}\n{b}", f"{a}\x7f", "..",
        f"{a}/..", f"{a}/../{b}/../..",
    ]))


@st.composite
def add_member(draw: st.DrawFn) -> Mutant:
    """A member RECORD lists correctly, but with an unsafe name or a non-file type; or a
    plain member RECORD does not list."""
    data = draw(st.binary(max_size=64))
    choice = draw(st.integers(0, 2))
    if choice == 0:
        name = draw(unsafe_name())
        entries = with_record([*BASE_ENTRIES, Entry(name, data)])
        return Mutant(f"add unsafe {name!r}", serialize(entries))
    if choice == 1:
        kind = draw(st.sampled_from([stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO,
                                     stat.S_IFSOCK, stat.S_IFDIR, 0o030000, 0o170000]))
        name = "torch/" + _safe_name(draw)
        entries = with_record([*BASE_ENTRIES, Entry(name, data, kind | 0o644)])
        return Mutant(f"add {name} of type {kind:o}", serialize(entries))
    name = "torch/" + _safe_name(draw) + ".py"
    return Mutant(f"add unlisted {name}", serialize([*BASE_ENTRIES, Entry(name, data)]))


@st.composite
def break_record(draw: st.DrawFn) -> Mutant:
    record = next(e for e in BASE_ENTRIES if e.name == RECORD)
    rows = record.data.decode().splitlines()
    i = draw(st.integers(0, len(rows) - 2))  # not RECORD's own last row
    path, digest, size = rows[i].split(",")
    how = draw(st.sampled_from(["drop", "short", "long", "size-text", "size-wrong", "hash-algo",
                                "hash-wrong", "twice", "ghost"]))
    if how == "drop":
        new = []
    elif how == "short":
        new = [",".join([path, digest][: draw(st.integers(1, 2))])]
    elif how == "long":
        new = [f"{path},{digest},{size},extra"]
    elif how == "size-text":
        new = [f"{path},{digest},{draw(SEGMENT.filter(lambda s: not s.isdigit()))}"]
    elif how == "size-wrong":
        new = [f"{path},{digest},{draw(st.integers(0, 10**9).filter(lambda n: n != int(size)))}"]
    elif how == "hash-algo":
        new = [f"{path},{draw(st.sampled_from(['md5', 'sha1', 'SHA256', '']))}="
               f"{digest.partition('=')[2]},{size}"]
    elif how == "hash-wrong":
        other = record_digest(draw(st.binary(max_size=32)))
        new = [f"{path},{other},{size}"] if other != digest else [f"{path},{digest}x,{size}"]
    elif how == "twice":
        new = [rows[i], rows[i]]
    else:
        new = [rows[i], f"torch/{_safe_name(draw)}.py,{digest},{size}"]
    text = "\n".join([*rows[:i], *new, *rows[i + 1:]]) + "\n"
    entries = [Entry(e.name, text.encode(), e.mode, e.compress_type) if e.name == RECORD else e
               for e in BASE_ENTRIES]
    return Mutant(f"RECORD row {i}: {how}", serialize(entries))


@st.composite
def reencode_metadata(draw: st.DrawFn) -> Mutant:
    """METADATA (with a non-ASCII Summary) in another encoding; RECORD updated to match."""
    encoding = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "cp1252", "utf-8-sig"]))
    meta = next(e for e in BASE_ENTRIES if e.name == METADATA)
    data = meta.data.decode().encode(encoding)
    entries = with_record([Entry(e.name, data, e.mode, e.compress_type) if e.name == METADATA
                           else e for e in BASE_ENTRIES])
    return Mutant(f"METADATA as {encoding}", serialize(entries))


@st.composite
def damage_elf(draw: st.DrawFn) -> Mutant:
    """The _C ELF truncated (its section header table is its end: always invalid) or with
    bytes flipped (no oracle), RECORD updated so that only the ELF is wrong."""
    ext = next(e for e in BASE_ENTRIES if e.name == C_EXT)
    if draw(st.booleans()):
        n = draw(st.integers(0, len(ext.data) - 1))
        data, what, oracle = ext.data[:n], f"ELF truncated to {n}", True
    else:
        buf = bytearray(ext.data)
        spots = draw(st.lists(st.integers(0, len(buf) - 1), min_size=1, max_size=3))
        for at in spots:
            buf[at] ^= draw(st.integers(1, 255))
        data, what, oracle = bytes(buf), f"ELF bytes {spots} flipped", False
    entries = with_record([Entry(e.name, data, e.mode, e.compress_type) if e.name == C_EXT
                           else e for e in BASE_ENTRIES])
    return Mutant(what, serialize(entries), oracle)


MUTANTS = st.one_of(flip_bytes(), flip_in_zip_structure(), truncate(), pad(), rename(),
                    duplicate(), remove(), add_member(), break_record(), reencode_metadata(),
                    damage_elf())


def test_the_unmutated_wheel_passes() -> None:
    """The property below is only meaningful if its starting point passes."""
    assert BASE_VIEW is not None
    code, out, err = check(BASE)
    assert (code, err) == (0, ""), out + err


@settings(PROFILE)
@given(MUTANTS)
def test_mutated_wheels_fail_cleanly_and_only_when_invalid(mutant: Mutant) -> None:
    code, out, err = check(mutant.data)  # an exception here is the traceback a user would see
    # --hypothesis-show-statistics: how often each kind of mutation passed or failed
    event(f"{mutant.what.split()[0]}: exit {code}")
    assert code in (0, 4), (mutant.what, code, err)
    if code == 4:
        assert len(err.splitlines()) == 1 and err.startswith("rvtorch: error: "), (mutant.what,
                                                                                   err)
    else:
        assert err == "", (mutant.what, err)
    if mutant.oracle:
        still_valid = view(mutant.data) == BASE_VIEW
        assert (code == 0) == still_valid, (mutant.what, still_valid, out)
