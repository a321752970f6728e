#!/usr/bin/env python3
"""Fault injection: every way a hostile user or a bad day can break a run, and what rvtorch does.

Each probe runs the real CLI (``python -m rvtorch``) the way a user would, in its own private
``RVTORCH_CACHE``, and records per fault: the exit code, the first stderr line and the error
line, what was left behind (files in the output folder, staging directories, partial
downloads), and whether a rerun recovered without a manual step. A row is green when the exit
code is the documented one, the error is a single ``rvtorch: error:`` line with no traceback,
nothing half-written is visible, and the rerun recovered.

The catalogue:

* inputs: unwritable/bogus ``--out`` and ``--report``, malformed ``--debian-mirror`` and
  ``$RVTORCH_DEBIAN_MIRROR``, unknown arch or version, missing arguments, an unwritable cache;
* downloads against a mirror this script serves on 127.0.0.1 (copies of the pinned Debian
  files): a mirror that drops every connection, one that drops and then goes down, a refused
  connection, a 404, a file of the right size with wrong bytes, a corrupt or truncated file in
  the cache, SIGKILL at 50 % of a download, SIGTERM during a download, a full disk (a tmpfs), a
  read-only ``sources/debian`` (a read-only bind mount), and a corrupt file in it;
* unpack: SIGKILL during ``source unpack``, ``patches check`` and a build's tree preparation
  (tar must die with its parent, the next run must remove the staging), SIGTERM (exit 130);
* publish: a full output folder and SIGKILL during the copy into it (the wheel is never lost);
* validation: SIGKILL, then SIGTERM, during ``rvtorch validate`` under QEMU (report folder,
  guest folders in the rootfs's /tmp, QEMU children);
* check-wheel on crafted wheels (path escapes, bad CRC, broken RECORD/METADATA, a header-only
  ELF) and the check-wheel Hypothesis test in its long profile.

Writes benchmarks/results/faults.json. Needs root (mounts), the pinned Debian files in the
shared cache (``rvtorch source fetch --source debian`` once) and, for the build probe, the
toolchain image, and for the validation probe the riscv64 rootfs with Debian's torch (the
machine's cache). About 10 minutes on 2 cores, plus the Hypothesis profile.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import http.server
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rvtorch.paths import repo_root
from rvtorch.torchspec import PinnedFile, torch_version

ROOT = repo_root()
RESULTS = ROOT / "benchmarks" / "results" / "faults.json"
HYPOTHESIS_TEST = ROOT / "tests" / "unit" / "test_check_wheel_hypothesis.py"
TV = torch_version(None)
PINS: list[tuple[str, PinnedFile]] = [(TV.debian.pool, p) for p in TV.debian.files] + [
    (v.pool, v.file) for v in TV.debian.vendored]
ORIG = TV.debian.orig


# ----------------------------------------------------------------------------------- results
@dataclass
class Row:
    name: str
    category: str
    command: str
    expected_exit: int | str
    exit: int | str | None = None
    first_stderr_line: str = ""
    error_line: str = ""
    one_error_line: bool = False
    traceback: bool = False
    left_behind: dict[str, list[str]] = field(default_factory=dict)
    half_written: list[str] = field(default_factory=list)
    rerun: dict[str, Any] | None = None
    recovered: bool | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    note: str = ""
    seconds: float = 0.0
    status: str = ""  # green | red | skipped

    def finish(self) -> Row:
        if self.status == "skipped":
            return self
        ok = self.exit == self.expected_exit and not self.traceback and not self.half_written
        if isinstance(self.expected_exit, int) and self.expected_exit not in (0,):
            ok = ok and self.one_error_line
        if self.recovered is not None:
            ok = ok and self.recovered
        ok = ok and all(self.checks.values())
        self.status = "green" if ok else "red"
        return self


@dataclass
class Result:
    code: int | str
    stdout: str
    stderr: str
    seconds: float


def _py() -> list[str]:
    return [sys.executable, "-m", "rvtorch"]


def run(argv: list[str], env: dict[str, str], timeout: float = 600) -> Result:
    start = time.monotonic()
    try:
        r = subprocess.run([*_py(), *argv], env=env, capture_output=True, text=True,
                           timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return Result("timeout", str(exc.stdout or ""), str(exc.stderr or ""),
                      time.monotonic() - start)
    return Result(r.returncode, r.stdout, r.stderr, time.monotonic() - start)


def describe(row: Row, res: Result) -> None:
    row.exit = res.code
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    row.first_stderr_line = lines[0][:300] if lines else ""
    errors = [ln for ln in lines if ln.startswith(("rvtorch: error:", "rvtorch: interrupted"))]
    row.error_line = errors[0][:300] if errors else ""
    row.one_error_line = len(errors) == 1
    row.traceback = "Traceback (most recent call last)" in res.stderr


def cache_env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RVTORCH_")}
    env.update({"RVTORCH_CACHE": str(cache), "RVTORCH_ROOT": str(ROOT), **extra})
    return env


def leftovers(cache: Path, out: Path | None = None) -> dict[str, list[str]]:
    """What a run left: staging directories, partial downloads, files in the output folder."""
    found: dict[str, list[str]] = {"staging": [], "partial": [], "dist": []}
    staging = cache / "staging"
    if staging.is_dir():
        found["staging"] = sorted(p.name for p in staging.iterdir() if p.is_dir())
    deb = cache / "sources" / "debian"
    if deb.is_dir():
        found["partial"] = sorted(p.name for p in deb.iterdir() if p.name.endswith(".part"))
    trees = cache / "trees"
    if trees.is_dir():  # hidden folders beside trees: the old staging layout (locks are files)
        found["staging"] += sorted(p.name for p in trees.iterdir()
                                   if p.name.startswith(".") and p.is_dir())
    if out is not None and out.is_dir():
        found["dist"] = sorted(p.name for p in out.iterdir())
    return found


def half_written_dist(out: Path) -> list[str]:
    """A wheel in the output folder without its checksum, or one that does not match it."""
    bad = []
    if not out.is_dir():
        return bad
    for whl in out.glob("*.whl"):
        sha = out / f"{whl.name}.sha256"
        if not sha.is_file():
            bad.append(f"{whl.name} without .sha256")
            continue
        digest = hashlib.sha256(whl.read_bytes()).hexdigest()
        if sha.read_text().split()[0] != digest:
            bad.append(f"{whl.name} does not match its .sha256")
    return bad


def tar_pids(needle: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"tar") and any(needle.encode() in c for c in cmd):
            pids.append(int(d.name))
    return pids


def tar_pids_like(needle: str) -> list[int]:
    """Processes (any program) whose command line mentions ``needle``."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if needle.encode() in cmd:
            pids.append(int(d.name))
    return pids


# ------------------------------------------------------------------------------------ mirror
class MirrorHandler(http.server.SimpleHTTPRequestHandler):
    """A Debian-archive-shaped mirror with switchable faults (class-level, one mirror)."""

    mode: ClassVar[str] = "ok"  # ok | drop | drop-then-down | corrupt | slow
    drop_at: ClassVar[int] = 4_000_000
    slow_bps: ClassVar[int] = 4_000_000
    requests: ClassVar[list[str]] = []
    served_drops: ClassVar[int] = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        cls = type(self)
        path = Path(self.translate_path(self.path))
        rng = self.headers.get("Range") or ""
        cls.requests.append(f"{self.path} {rng}".strip())
        if cls.mode == "drop-then-down" and cls.served_drops >= 1:
            self.send_error(503, "mirror down")
            return
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = data[start:]
        if cls.mode == "corrupt":
            body = bytes(b ^ 0xFF for b in body[:4096]) + body[4096:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if cls.mode in ("drop", "drop-then-down") and len(body) > cls.drop_at:
                self.wfile.write(body[: cls.drop_at])
                self.wfile.flush()
                cls.served_drops += 1
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if cls.mode == "slow":
                step = cls.slow_bps // 20
                for i in range(0, len(body), step):
                    self.wfile.write(body[i:i + step])
                    time.sleep(0.05)
                return
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextlib.contextmanager
def mirror(root: Path) -> Iterator[str]:
    handler = lambda *a, **k: MirrorHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/debian"
    finally:
        httpd.shutdown()
        httpd.server_close()


def set_mirror(mode: str = "ok", **kw: int) -> None:
    MirrorHandler.mode = mode
    MirrorHandler.requests = []
    MirrorHandler.served_drops = 0
    MirrorHandler.drop_at = kw.get("drop_at", 4_000_000)
    MirrorHandler.slow_bps = kw.get("slow_bps", 4_000_000)


def fill_mirror(root: Path, shared: Path) -> None:
    """Lay the pinned files out as a Debian archive (pool/...), copied from the shared cache."""
    for pool, pin in PINS:
        src = shared / pin.name
        if not src.is_file() or src.stat().st_size != pin.size:
            raise SystemExit(f"bench_faults: {src} missing; run `rvtorch source fetch "
                             "--source debian` first")
        dest = root / "debian" / pool / pin.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
        if hashlib.sha256(dest.read_bytes()).hexdigest() != pin.sha256:
            raise SystemExit(f"bench_faults: {src} does not match its pin")


def seed_cache(cache: Path, shared: Path, *, skip: tuple[str, ...] = ()) -> Path:
    deb = cache / "sources" / "debian"
    deb.mkdir(parents=True, exist_ok=True)
    for _, pin in PINS:
        if pin.name not in skip:
            shutil.copy(shared / pin.name, deb / pin.name)
    return deb


# ------------------------------------------------------------------------------------ mounts
@contextlib.contextmanager
def mounted(kind: str, path: Path, size: str = "16m") -> Iterator[Callable[[str], None]]:
    """``path`` as a tmpfs of ``size`` or a read-only bind mount; yields a remount function."""
    path.mkdir(parents=True, exist_ok=True)
    if kind == "tmpfs":
        cmds = [["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]]
    else:
        cmds = [["mount", "--bind", str(path), str(path)],
                ["mount", "-o", "remount,bind,ro", str(path)]]
    depth = 0
    try:
        for cmd in cmds:
            subprocess.run(cmd, check=True, capture_output=True)
            depth = 1

        def remount(opts: str) -> None:
            subprocess.run(["mount", "-o", f"remount,{opts}", str(path)], check=True,
                           capture_output=True)

        yield remount
    finally:
        if depth:
            subprocess.run(["umount", "-l", str(path)], check=False)


# ------------------------------------------------------------------------------------ probes
class Bench:
    def __init__(self, work: Path, shared: Path, url: str, www: Path) -> None:
        self.work = work
        self.shared = shared
        self.url = url
        self.www = www
        self.rows: list[Row] = []
        self.n = 0

    def cache(self, name: str) -> Path:
        self.n += 1
        c = self.work / f"{self.n:02d}-{name}"
        c.mkdir()
        return c

    def add(self, row: Row, started: float) -> None:
        row.seconds = round(time.monotonic() - started, 1)
        self.rows.append(row.finish())
        mark = {"green": "ok ", "red": "RED", "skipped": "-- "}[row.status]
        print(f"{mark} {row.category:<10} {row.name:<40} exit={row.exit} "
              f"{row.error_line[:90]}", file=sys.stderr, flush=True)

    # -------------------------------------------------------------- inputs (parse time, exit 2)
    def inputs(self) -> None:
        fetch_ok = ["source", "fetch", "--source", "debian", "--debian-mirror", self.url]
        dry = ["build", "--arch", "riscv64", "--source", "debian", "--dry-run"]
        a_file = self.work / "a-file"
        a_file.write_text("")
        cases: list[tuple[str, list[str], dict[str, str], list[str] | None]] = [
            ("out_in_proc", [*dry, "--out", "/proc/nope"], {}, [*dry, "--out",
                                                               str(self.work / "dist-ok")]),
            ("out_is_a_file", [*dry, "--out", str(a_file)], {}, dry),
            ("report_in_proc", ["validate", "--arch", "riscv64", "--rootfs-torch", "--report",
                                "/proc/nope"], {}, None),
            ("mirror_notaurl", [*fetch_ok[:-1], "notaurl"], {}, fetch_ok),
            ("mirror_broken_ipv6", [*fetch_ok[:-1], "http://[::1"], {}, fetch_ok),
            ("mirror_env_notaurl", fetch_ok[:4], {"RVTORCH_DEBIAN_MIRROR": "notaurl"},
             fetch_ok),
            ("unknown_arch", ["build", "--arch", "riscv46", "--dry-run"], {}, dry),
            ("unknown_torch_version", [*dry, "--torch-version", "9.9"], {}, dry),
            ("missing_required_flag", ["build", "--dry-run"], {}, dry),
            ("bad_set", [*dry, "--set", "NOEQUALS"], {}, dry),
            ("jobs_zero", [*dry, "--jobs", "0"], {}, dry),
            ("unwritable_cache", fetch_ok, {"RVTORCH_CACHE": "/proc/nope"}, None),
        ]
        for name, argv, extra, fixed in cases:
            started = time.monotonic()
            cache = self.cache(name)
            env = cache_env(cache, **extra)
            row = Row(name, "input", "rvtorch " + " ".join(argv), 2)
            res = run(argv, env, timeout=120)
            describe(row, res)
            row.checks["reason_is_the_first_line"] = row.first_stderr_line == row.error_line
            row.left_behind = leftovers(cache)
            row.checks["nothing_written"] = not any(row.left_behind.values()) and not (
                cache / "sources").exists()
            if fixed is not None:
                r2 = run(fixed, cache_env(cache), timeout=300)
                row.rerun = {"command": "rvtorch " + " ".join(fixed), "exit": r2.code}
                row.recovered = r2.code == 0
            self.add(row, started)

    # ----------------------------------------------------------------------------- downloads
    def _fetch(self, cache: Path, url: str | None = None, **extra: str) -> Result:
        return run(["source", "fetch", "--source", "debian", "--debian-mirror", url or self.url],
                   cache_env(cache, **extra), timeout=300)

    def _rerun_fetch(self, row: Row, cache: Path, *, expect_range: bool = False,
                     tries: int = 1) -> None:
        set_mirror("ok")
        for _ in range(tries):
            r2 = self._fetch(cache)
            if r2.code == 0:
                break
        ranged = any("bytes=" in q and not q.endswith("bytes=0-")
                     for q in MirrorHandler.requests)
        row.rerun = {"command": "rvtorch source fetch (healthy mirror)" + (
                         f", up to {tries} runs" if tries > 1 else ""), "exit": r2.code,
                     "requests": MirrorHandler.requests[:8]}
        after = leftovers(cache)
        row.recovered = r2.code == 0 and not after["partial"] and not after["staging"]
        if expect_range:
            row.checks["rerun_resumed_with_range"] = ranged

    def downloads(self) -> None:
        orig_url = f"{self.url}/{TV.debian.pool}/{ORIG.name}"

        # A mirror that cuts every response at 4 MB: one run resumes until it has the file.
        started = time.monotonic()
        cache = self.cache("drop_every_response")
        set_mirror("drop", drop_at=4_000_000)
        row = Row("mirror_drops_every_response", "download", "rvtorch source fetch", 0)
        res = self._fetch(cache)
        describe(row, res)
        row.left_behind = leftovers(cache)
        row.checks["resumed_in_the_same_run"] = sum(
            "bytes=" in q for q in MirrorHandler.requests) >= 1
        row.note = f"{len(MirrorHandler.requests)} requests"
        self.add(row, started)

        # A cut, then the mirror goes down (503): exit 3, partial kept, a rerun resumes.
        started = time.monotonic()
        cache = self.cache("drop_then_down")
        set_mirror("drop-then-down", drop_at=4_000_000)
        row = Row("mirror_drops_then_goes_down", "download", "rvtorch source fetch", 3)
        res = self._fetch(cache)
        describe(row, res)
        row.left_behind = leftovers(cache)
        row.checks["partial_kept"] = f"{ORIG.name}.part" in row.left_behind["partial"]
        row.checks["says_rerun"] = "rerun" in row.error_line
        self._rerun_fetch(row, cache, expect_range=True)
        self.add(row, started)

        # Refused connection and 404: exit 3, no resume hint.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{s.getsockname()[1]}/debian"
        for name, url in (("connection_refused", dead), ("http_404", self.url + "/nothing")):
            started = time.monotonic()
            cache = self.cache(name)
            set_mirror("ok")
            row = Row(name, "download", f"rvtorch source fetch --debian-mirror {url}", 3)
            res = self._fetch(cache, url)
            describe(row, res)
            row.left_behind = leftovers(cache)
            row.checks["no_resume_hint"] = "rerun to resume" not in res.stderr
            self._rerun_fetch(row, cache)
            self.add(row, started)

        # The mirror serves the right size with wrong bytes: deleted, exit 3.
        started = time.monotonic()
        cache = self.cache("corrupt_download")
        set_mirror("corrupt")
        row = Row("mirror_serves_wrong_bytes", "download", "rvtorch source fetch", 3)
        res = self._fetch(cache)
        describe(row, res)
        row.left_behind = leftovers(cache)
        deb = cache / "sources" / "debian"
        row.checks["wrong_file_deleted"] = not (deb / ORIG.name).exists() and not (
            deb / f"{ORIG.name}.part").exists()
        self._rerun_fetch(row, cache)
        self.add(row, started)

        # A corrupt (same size) or truncated file already in the cache.
        started = time.monotonic()
        cache = self.cache("corrupt_cached")
        deb = seed_cache(cache, self.shared)
        data = bytearray((deb / ORIG.name).read_bytes())
        data[1000:1010] = b"\0" * 10
        (deb / ORIG.name).write_bytes(bytes(data))
        set_mirror("ok")
        row = Row("corrupt_tarball_in_cache", "download", "rvtorch source fetch", 3)
        res = self._fetch(cache)
        describe(row, res)
        row.checks["deleted"] = not (deb / ORIG.name).exists()
        row.left_behind = leftovers(cache)
        self._rerun_fetch(row, cache)
        self.add(row, started)

        started = time.monotonic()
        cache = self.cache("truncated_cached")
        deb = seed_cache(cache, self.shared)
        with (deb / ORIG.name).open("r+b") as fh:
            fh.truncate(ORIG.size // 3)
        set_mirror("ok")
        row = Row("truncated_tarball_in_cache", "download", "rvtorch source fetch", 0)
        res = self._fetch(cache)
        describe(row, res)
        row.left_behind = leftovers(cache)
        row.checks["resumed_not_refetched"] = any(
            f"bytes={ORIG.size // 3}-" in q for q in MirrorHandler.requests)
        self.add(row, started)

        # SIGKILL at 50 % and SIGTERM at 30 % of the orig tarball (slow mirror).
        for name, sig, expected, frac in (("sigkill_at_50pct_of_download", signal.SIGKILL,
                                           -9, 0.5),
                                          ("sigterm_during_download", signal.SIGTERM, 130, 0.3)):
            started = time.monotonic()
            cache = self.cache(name)
            set_mirror("slow", slow_bps=6_000_000)
            row = Row(name, "download", f"rvtorch source fetch, {sig.name} at "
                      f"{int(frac * 100)} %", expected)
            part = cache / "sources" / "debian" / f"{ORIG.name}.part"
            proc = subprocess.Popen([*_py(), "source", "fetch", "--source", "debian",
                                     "--debian-mirror", self.url], env=cache_env(cache),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                if part.exists() and part.stat().st_size >= frac * ORIG.size:
                    proc.send_signal(sig)
                    break
                time.sleep(0.02)
            out, err = proc.communicate(timeout=60)
            describe(row, Result(proc.returncode, out, err, 0))
            if expected == -9:
                row.one_error_line = True  # SIGKILL: no chance to print anything
                row.first_stderr_line = row.error_line = "(killed)"
            row.left_behind = leftovers(cache)
            size = part.stat().st_size if part.exists() else 0
            row.note = f"partial kept: {size} of {ORIG.size} bytes"
            row.checks["partial_kept"] = 0 < size < ORIG.size
            self._rerun_fetch(row, cache, expect_range=True)
            self.add(row, started)
        del orig_url

    # ------------------------------------------------------------ full and read-only caches
    def file_systems(self) -> None:
        # A full disk during the download: exit 2, partial kept; more space -> a rerun resumes.
        started = time.monotonic()
        cache = self.cache("disk_full")
        row = Row("disk_full_during_download", "disk", "rvtorch source fetch (16 MB tmpfs "
                  "cache)", 2)
        with mounted("tmpfs", cache, size="16m") as remount:
            set_mirror("ok")
            res = self._fetch(cache)
            describe(row, res)
            row.left_behind = leftovers(cache)
            row.checks["no_resume_hint"] = "rerun to resume" not in res.stderr
            row.checks["partial_kept"] = bool(row.left_behind["partial"])
            remount("size=256m")
            self._rerun_fetch(row, cache, expect_range=True)
        self.add(row, started)

        # A read-only sources/debian: exit 2 before any download.
        started = time.monotonic()
        cache = self.cache("ro_sources")
        deb = cache / "sources" / "debian"
        row = Row("read_only_sources_debian", "disk", "rvtorch source fetch (ro sources/debian)",
                  2)
        with mounted("ro", deb):
            res = self._fetch(cache)
            describe(row, res)
            row.left_behind = leftovers(cache)
            row.checks["no_resume_hint"] = "rerun to resume" not in res.stderr
        self._rerun_fetch(row, cache)
        self.add(row, started)

        # A corrupt file inside a read-only sources/debian: exit 3, one line.
        started = time.monotonic()
        cache = self.cache("ro_sources_corrupt")
        deb = seed_cache(cache, self.shared)
        data = bytearray((deb / ORIG.name).read_bytes())
        data[-100:] = b"\0" * 100
        (deb / ORIG.name).write_bytes(bytes(data))
        row = Row("corrupt_file_in_read_only_sources", "disk",
                  "rvtorch source fetch (ro sources/debian, corrupt orig)", 3)
        with mounted("ro", deb):
            res = self._fetch(cache)
            describe(row, res)
            row.left_behind = leftovers(cache)
            row.checks["file_not_deleted_but_named"] = ORIG.name in row.error_line
        # Writable again: the first rerun deletes the corrupt file (exit 3, as documented for a
        # sha256 mismatch), the second downloads it; no manual step.
        self._rerun_fetch(row, cache, tries=2)
        self.add(row, started)

        # A read-only cache as a whole: exit 2.
        started = time.monotonic()
        cache = self.cache("ro_cache")
        row = Row("read_only_cache", "disk", "rvtorch source fetch (ro RVTORCH_CACHE)", 2)
        with mounted("ro", cache):
            res = self._fetch(cache)
            describe(row, res)
        self._rerun_fetch(row, cache)
        self.add(row, started)

    # ---------------------------------------------------------------------- unpack / staging
    def _kill_during_unpack(self, name: str, argv: list[str], cache: Path, sig: signal.Signals,
                            expected: int | str, rerun: list[str] | None,
                            dest: Path | None = None) -> None:
        started = time.monotonic()
        row = Row(name, "unpack", "rvtorch " + " ".join(argv) + f", {sig.name} in tar",
                  expected)
        env = cache_env(cache)
        proc = subprocess.Popen([*_py(), *argv], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=False)
        deadline = time.monotonic() + 600
        tar_seen: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None:
            tar_seen = tar_pids(str(cache))
            if tar_seen:
                time.sleep(1.0)  # let tar write into the staging
                proc.send_signal(sig)
                break
            time.sleep(0.05)
        out, err = proc.communicate(timeout=120)
        describe(row, Result(proc.returncode, out, err, 0))
        if expected == -9:
            row.one_error_line = True
            row.first_stderr_line = row.error_line = "(killed)"
        time.sleep(1.5)
        row.checks["tar_was_running"] = bool(tar_seen)
        row.checks["tar_died_with_parent"] = not tar_pids(str(cache))
        row.left_behind = leftovers(cache)
        if dest is not None:
            row.checks["destination_untouched"] = not dest.exists()
        staged_mb = 0.0
        for d in (cache / "staging").glob("*"):
            if d.is_dir():
                staged_mb += sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) / 1e6
        row.note = f"staging left by the killed run: {staged_mb:.0f} MB"
        if sig == signal.SIGTERM:
            row.checks["staging_removed_at_once"] = not row.left_behind["staging"]
        if rerun is not None:
            r2 = run(rerun, env, timeout=900)
            after = leftovers(cache)
            row.rerun = {"command": "rvtorch " + " ".join(rerun), "exit": r2.code,
                         "staging_after": after["staging"],
                         "error": r2.stderr.strip().splitlines()[-1:] if r2.code else []}
            row.recovered = r2.code == 0 and not after["staging"]
        self.add(row, started)

    def unpack(self) -> None:
        src = ["--source", "debian", "--debian-mirror", self.url]
        cache = self.cache("kill_source_unpack")
        seed_cache(cache, self.shared)
        dest = self.work / "unpacked-tree"
        argv = ["source", "unpack", *src, str(dest)]
        self._kill_during_unpack("sigkill_during_source_unpack", argv, cache, signal.SIGKILL,
                                 -9, argv, dest)
        row = self.rows[-1]
        row.checks["rerun_made_the_tree"] = (dest / "setup.py").is_file()
        row.finish()
        shutil.rmtree(dest, ignore_errors=True)

        cache = self.cache("kill_patches_check")
        seed_cache(cache, self.shared)
        argv = ["patches", "check", *src]
        self._kill_during_unpack("sigkill_during_patches_check", argv, cache, signal.SIGKILL,
                                 -9, argv)

        cache = self.cache("term_source_unpack")
        seed_cache(cache, self.shared)
        argv = ["source", "unpack", *src, str(dest)]
        self._kill_during_unpack("sigterm_during_source_unpack", argv, cache, signal.SIGTERM,
                                 130, None, dest)

    def build_prepare(self) -> None:
        """SIGKILL while a build unpacks its tree (the toolchain image must exist already)."""
        cache = self.cache("kill_build_prepare")
        seed_cache(cache, self.shared)
        out = self.work / "dist-build"
        argv = ["build", "--arch", "riscv64", "--source", "debian", "--stage", "configure",
                "--debian-mirror", self.url, "--out", str(out)]
        started = time.monotonic()
        row = Row("sigkill_during_build_tree_preparation", "unpack",
                  "rvtorch " + " ".join(argv) + ", SIGKILL in tar", -9)
        env = cache_env(cache)

        def drop_containers(pid: int) -> list[str]:
            """Working containers the killed run had made (engine.py names them
            rvtorch-<pid>-...): removed, they are ours."""
            r = subprocess.run(["buildah", "containers", "--format", "{{.ContainerName}}"],
                               capture_output=True, text=True, check=False)
            mine = [n for n in r.stdout.split() if n.startswith(f"rvtorch-{pid}-")]
            for n in mine:
                subprocess.run(["buildah", "rm", n], capture_output=True, check=False)
            return mine

        def kill_when(cond: Callable[[], bool], timeout: float,
                      delay: float) -> tuple[Result, bool]:
            proc = subprocess.Popen([*_py(), *argv], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
            hit = False
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if cond():
                    hit = True
                    time.sleep(delay)
                    os.kill(proc.pid, signal.SIGKILL)  # the rvtorch process only, as a user's kill
                    break
                time.sleep(0.05)
            if proc.poll() is None and not hit:
                os.killpg(proc.pid, signal.SIGKILL)
            o, e = proc.communicate(timeout=120)
            containers[proc.pid] = drop_containers(proc.pid)
            return Result(proc.returncode, o, e, 0), hit

        containers: dict[int, list[str]] = {}

        res, hit = kill_when(lambda: bool(tar_pids(str(cache))), 900, 0.5)
        describe(row, res)
        row.one_error_line = True
        row.first_stderr_line = row.error_line = "(killed)" if hit else res.stderr[-200:]
        time.sleep(1.5)
        row.checks["killed_in_tar"] = hit
        row.checks["tar_died_with_parent"] = not tar_pids(str(cache))
        row.left_behind = leftovers(cache, out)
        row.checks["dist_untouched"] = not out.exists() or not any(out.iterdir())
        tree = next((cache / "trees").glob("torch-*"), None) if (cache / "trees").is_dir() \
            else None
        row.checks["no_half_tree"] = tree is None
        # The rerun: the stale staging goes, the tree is prepared; stopped once it is there
        # (the configure that follows is the build's own business and takes minutes).
        first = next(iter(containers.values()))
        row.checks["no_container_left_by_the_kill_in_tar"] = first == []
        prepared = lambda: any((cache / "trees").glob("torch-*/.rvtorch-prepared")) \
            if (cache / "trees").is_dir() else False  # noqa: E731
        r2, hit2 = kill_when(prepared, 900, 0.0)
        row.note = ("the rerun's own stop after tree preparation removed its working "
                    f"containers {list(containers.values())[-1]}")
        after = leftovers(cache, out)
        row.rerun = {"command": "the same build, stopped once its tree is prepared",
                     "tree_prepared": hit2, "staging_after": after["staging"],
                     "exit": r2.code if not hit2 else "stopped after tree preparation"}
        row.recovered = hit2 and not after["staging"]
        self.add(row, started)

    # ------------------------------------------------------------------------------- publish
    def publish(self) -> None:
        """The wheel is never lost: a full --out keeps it in the cache; SIGKILL mid-copy leaves
        no half-written wheel in --out and the next publish cleans up."""
        snippet = (
            "import sys; from pathlib import Path\n"
            "from rvtorch import build\n"
            "from rvtorch.errors import RvtorchError\n"
            "try:\n"
            "    print(build.publish(Path(sys.argv[1]), Path(sys.argv[2]), {'steps': {}}))\n"
            "except RvtorchError as e:\n"
            "    print('rvtorch: error: ' + e.one_line(), file=sys.stderr); sys.exit(e.exit_code)\n"
        )
        name = "torch-2.6.0+riscv64-cp313-cp313-linux_riscv64.whl"

        def fresh_wheel(cache: Path, mb: int) -> Path:
            w = cache / ".wheel-bench" / "repaired" / name
            w.parent.mkdir(parents=True, exist_ok=True)
            with w.open("wb") as fh:
                for _ in range(mb):
                    fh.write(os.urandom(1 << 20))
            return w

        started = time.monotonic()
        cache = self.cache("publish_full")
        out = self.work / "dist-full"
        wheel = fresh_wheel(cache, 24)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        row = Row("publish_into_a_full_out", "publish", "publish a 24 MB wheel into an 8 MB "
                  "tmpfs --out", 2)
        with mounted("tmpfs", out, size="8m") as remount:
            r = subprocess.run([sys.executable, "-c", snippet, str(wheel), str(out)],
                               env=cache_env(cache), capture_output=True, text=True, check=False)
            describe(row, Result(r.returncode, r.stdout, r.stderr, 0))
            row.left_behind = leftovers(cache, out)
            kept = cache / "unpublished" / name
            row.checks["wheel_kept"] = kept.is_file() and hashlib.sha256(
                kept.read_bytes()).hexdigest() == digest
            row.checks["out_empty"] = row.left_behind["dist"] == []
            remount("size=64m")
            r2 = subprocess.run([sys.executable, "-c", snippet, str(kept), str(out)],
                                env=cache_env(cache), capture_output=True, text=True,
                                check=False)
            row.rerun = {"command": "publish the kept wheel again (more space)",
                         "exit": r2.returncode}
            row.recovered = r2.returncode == 0 and (out / name).is_file()
            row.half_written = half_written_dist(out)
        self.add(row, started)

        started = time.monotonic()
        cache = self.cache("publish_kill")
        out = self.work / "dist-kill"
        out.mkdir()
        wheel = fresh_wheel(cache, 400)
        row = Row("sigkill_during_publish", "publish", "SIGKILL while a 400 MB wheel is copied "
                  "into --out", -9)
        proc = subprocess.Popen([sys.executable, "-c", snippet, str(wheel), str(out)],
                                env=cache_env(cache), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            stage = [p for p in out.glob(".publish-*/*.whl")]
            if stage and stage[0].stat().st_size > 50_000_000:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        o, e = proc.communicate(timeout=60)
        describe(row, Result(proc.returncode, o, e, 0))
        row.one_error_line = True
        row.first_stderr_line = row.error_line = "(killed)"
        row.left_behind = leftovers(cache, out)
        row.half_written = half_written_dist(out)
        row.checks["no_wheel_visible"] = not list(out.glob("*.whl"))
        row.checks["wheel_still_in_the_build_folder"] = wheel.is_file()
        r2 = subprocess.run([sys.executable, "-c", snippet, str(wheel), str(out)],
                            env=cache_env(cache), capture_output=True, text=True, check=False)
        after = sorted(p.name for p in out.iterdir())
        row.rerun = {"command": "publish again", "exit": r2.returncode, "dist_after": after}
        row.recovered = r2.returncode == 0 and after == sorted(
            [name, f"{name}.sha256", f"{name}.build-info.json"])
        self.add(row, started)

    # ---------------------------------------------------------------------------- validation
    def validation(self) -> None:
        """SIGKILL, then SIGTERM, during `rvtorch validate` (smoke under QEMU, Debian's torch).

        Runs against the machine's cache (the target rootfs is there). The report folder must
        hold nothing half-written; the killed run's guest folder in the rootfs's /tmp must be
        removed by the next run, which is then interrupted with SIGTERM (exit 130) once its own
        guest folder exists, and must remove that one itself.
        """
        from rvtorch.paths import reap_stale
        from rvtorch.rootfs import rootfs_path

        env = {k: v for k, v in os.environ.items() if k != "RVTORCH_DEBIAN_MIRROR"}
        tmp = rootfs_path("riscv64", True, create_cache=False) / "tmp"
        if not tmp.is_dir():
            row = Row("sigkill_during_validation", "validation", "rvtorch validate", -9,
                      status="skipped", note=f"no riscv64 rootfs with torch at {tmp.parent}")
            self.add(row, time.monotonic())
            return

        def owners() -> set[str]:
            return {p.name for p in tmp.glob("rvtorch.*.owner")}

        def start(report: Path) -> tuple[subprocess.Popen[str], list[str]]:
            argv = ["validate", "--arch", "riscv64", "--rootfs-torch", "--suite", "smoke",
                    "--cpu", "rv64", "--report", str(report)]
            proc = subprocess.Popen([*_py(), *argv], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            lines: list[str] = []
            assert proc.stderr is not None
            stream = proc.stderr

            def pump() -> None:
                for line in stream:
                    lines.append(line)

            threading.Thread(target=pump, daemon=True).start()
            return proc, lines

        def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if cond():
                    return True
                time.sleep(0.1)
            return False

        started = time.monotonic()
        report = self.work / "report-kill"
        cmd = ("rvtorch validate --arch riscv64 --rootfs-torch --suite smoke --cpu rv64 "
               f"--report {report.name}")
        row = Row("sigkill_during_validation", "validation", cmd + ", SIGKILL in the smoke", -9)
        before = owners()
        proc, lines = start(report)
        hit = wait_for(lambda: any("smoke ..." in ln for ln in lines), 600)
        mine = owners() - before
        if hit:
            time.sleep(3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        row.exit = proc.returncode
        row.one_error_line = True
        row.first_stderr_line = row.error_line = "(killed)"
        time.sleep(1.5)
        killed_dirs = [o[: -len(".owner")] for o in mine]
        row.checks["killed_in_the_smoke"] = hit
        row.checks["report_holds_nothing_half_written"] = not report.exists() or not any(
            report.iterdir())
        row.checks["guest_processes_died_with_it"] = not any(
            tar_pids_like(d) for d in killed_dirs)
        row.left_behind = {"rootfs_tmp": sorted(d for d in killed_dirs if (tmp / d).exists()),
                           "report": sorted(p.name for p in report.glob("*"))}

        # The rerun: it removes the killed run's folder on entry; SIGTERM once it is running.
        started2 = time.monotonic()
        report2 = self.work / "report-term"
        term = Row("sigterm_during_validation", "validation",
                   cmd.replace(report.name, report2.name) + ", SIGTERM in the smoke", 130)
        before = owners()
        proc, lines = start(report2)
        hit2 = wait_for(lambda: bool(owners() - before) and any(
            "smoke ..." in ln for ln in lines), 600)
        mine2 = owners() - before
        row.rerun = {"command": "the same validate (interrupted by the next row's SIGTERM)",
                     "killed_runs_folder_removed": not any((tmp / d).exists()
                                                         for d in killed_dirs)}
        row.recovered = hit2 and row.rerun["killed_runs_folder_removed"]
        self.add(row, started)
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        time.sleep(1)
        describe(term, Result(proc.returncode, "", "".join(lines), 0))
        term_dirs = [o[: -len(".owner")] for o in mine2]
        term.checks["interrupted_in_the_smoke"] = hit2
        term.checks["its_guest_folder_removed"] = not any((tmp / d).exists() for d in term_dirs)
        term.checks["report_holds_nothing_half_written"] = not report2.exists() or not any(
            report2.iterdir())
        term.left_behind = {"rootfs_tmp": sorted(d for d in term_dirs if (tmp / d).exists())}
        self.add(term, started2)
        # Whatever a failed probe left there is removed the way the next run would.
        reap_stale(tmp, orphans=False)

    # --------------------------------------------------------------------------- check-wheel
    def check_wheel(self) -> None:
        sys.path.insert(0, str(ROOT))
        from tests.wheelkit import make_wheel, rewrite_wheel

        base_dir = self.work / "wheels"
        base = make_wheel(base_dir, {"torch/__init__.py": "from torch._C import *\n"})

        def crafted(name: str, mutate: Callable[[zipfile.ZipFile, zipfile.ZipFile], None]
                    ) -> Path:
            path = base_dir / name / base.name
            path.parent.mkdir(parents=True)
            with zipfile.ZipFile(base) as zin, zipfile.ZipFile(path, "w") as zout:
                mutate(zin, zout)
            return path

        def copy_all(zin: zipfile.ZipFile, zout: zipfile.ZipFile,
                     skip: tuple[str, ...] = ()) -> None:
            for info in zin.infolist():
                if not info.filename.endswith(skip) or not skip:
                    zout.writestr(info, zin.read(info))

        def add(member: str, data: bytes) -> Callable[[zipfile.ZipFile, zipfile.ZipFile], None]:
            def m(zin: zipfile.ZipFile, zout: zipfile.ZipFile) -> None:
                copy_all(zin, zout)
                zout.writestr(member, data)
            return m

        def replace(suffix: str, fn: Callable[[bytes], bytes]
                    ) -> Callable[[zipfile.ZipFile, zipfile.ZipFile], None]:
            def m(zin: zipfile.ZipFile, zout: zipfile.ZipFile) -> None:
                for info in zin.infolist():
                    data = zin.read(info)
                    zout.writestr(info, fn(data) if info.filename.endswith(suffix) else data)
            return m

        elf64 = (b"\x7fELF\x02\x01\x01" + b"\0" * 9 + (2).to_bytes(2, "little")
                 + (243).to_bytes(2, "little") + (1).to_bytes(4, "little") + b"\0" * 40)
        probes: list[tuple[str, Path, str]] = [
            ("member_dotdot", crafted("dotdot", add("../evil.py", b"x=1\n")), "evil.py"),
            ("member_absolute", crafted("abs", add("/evil_abs.py", b"x=1\n")), "evil_abs"),
            ("member_escape_via_torch", crafted("esc", add("torch/../../evil2", b"x")),
             "evil2"),
            ("record_short_row", crafted("short", replace(
                "RECORD", lambda d: d + b"torch/x.py,sha256=abc\n")), "RECORD"),
            ("record_non_numeric_size", crafted("nonnum", replace(
                "RECORD", lambda d: d + b"torch/y.py,sha256=abc,notanumber\n")), "RECORD"),
        ]

        def consistent(name: str, changes: dict[str, bytes]) -> Path:
            """The base wheel with ``changes`` and a RECORD that agrees: only they are wrong."""
            path = base_dir / name / base.name
            path.parent.mkdir(parents=True)
            return rewrite_wheel(base, changes, path)

        meta = "torch-2.6.0+riscv64.dist-info/METADATA"
        with zipfile.ZipFile(base) as zf:
            meta_bytes = zf.read(meta)
        probes += [
            ("metadata_not_utf8", consistent("meta", {meta: meta_bytes + b"Summary: \xff\xfe\n"}),
             "METADATA"),
            ("header_only_elf_as_C", consistent(
                "elf", {"torch/_C.cpython-313-riscv64-linux-gnu.so": elf64}), "_C"),
        ]
        # A member whose stored bytes no longer match its CRC (central directory intact).
        crc = base_dir / "crc" / base.name
        crc.parent.mkdir(parents=True)
        with zipfile.ZipFile(base) as zin, zipfile.ZipFile(crc, "w") as zout:
            for info in zin.infolist():
                zout.writestr(zipfile.ZipInfo(info.filename, info.date_time), zin.read(info),
                              compress_type=zipfile.ZIP_STORED)
        raw = bytearray(crc.read_bytes())
        at = raw.find(b"from torch._C import")
        raw[at] ^= 0x20
        crc.write_bytes(bytes(raw))
        probes.append(("member_bad_crc", crc, "crc"))
        not_zip = base_dir / "notzip" / base.name
        not_zip.parent.mkdir()
        not_zip.write_bytes(b"not a zip at all")
        probes.append(("not_a_zip", not_zip, ""))
        for name, wheel, needle in probes:
            started = time.monotonic()
            row = Row(name, "check-wheel", f"rvtorch check-wheel {wheel.parent.name}/"
                      f"{wheel.name}", 4)
            res = run(["check-wheel", "--arch", "riscv64", str(wheel)], cache_env(
                self.cache("cw-" + name)), timeout=120)
            describe(row, res)
            if needle:
                row.checks["names_the_fault"] = needle.lower() in (
                    res.stdout + res.stderr).lower()
            if name in ("metadata_not_utf8", "header_only_elf_as_C"):
                # RECORD agrees with the members, so the finding must be about the content.
                row.checks["not_a_record_finding"] = "[record]" not in row.error_line
            self.add(row, started)
        started = time.monotonic()
        row = Row("missing_wheel_file", "check-wheel", "rvtorch check-wheel /nonexistent.whl", 2)
        describe(row, run(["check-wheel", "/nonexistent.whl"], cache_env(self.cache("cw-miss"))))
        self.add(row, started)

    def hypothesis(self) -> None:
        started = time.monotonic()
        row = Row("check_wheel_hypothesis_long", "check-wheel",
                  "RVTORCH_HYPOTHESIS_PROFILE=long pytest -q "
                  "tests/unit/test_check_wheel_hypothesis.py", 0)
        if not HYPOTHESIS_TEST.is_file():
            row.status = "skipped"
            row.note = f"{HYPOTHESIS_TEST.relative_to(ROOT)} does not exist yet"
            self.add(row, started)
            return
        env = dict(os.environ, RVTORCH_HYPOTHESIS_PROFILE="long")
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(HYPOTHESIS_TEST)], cwd=ROOT, env=env, capture_output=True,
                           text=True, check=False, timeout=3600)
        row.exit = r.returncode
        tail = [ln for ln in r.stdout.splitlines() if ln.strip()][-1:] or [""]
        row.first_stderr_line = row.error_line = tail[0][:300]
        row.one_error_line = True
        row.note = tail[0][:300]
        self.add(row, started)


# The run's temporary work directory (``rvtorch-faults-XXXX`` under the temp dir) in recorded
# commands and messages: a machine path, so the results name it ``$WORK`` instead.
# (also where a recorded line was cut to 300 characters inside that name)
_WORK_DIR = re.compile(r"/[^\s\"']*/rvtorch-f(?:a(?:u(?:l(?:t(?:s(?:-[A-Za-z0-9_]*)?)?)?)?)?)?$|"
                       r"/[^\s\"']*/rvtorch-faults-[A-Za-z0-9_]+")


def relabel(obj: Any) -> Any:
    """``obj`` with every path under the run's work directory written as ``$WORK/...``."""
    if isinstance(obj, str):
        return _WORK_DIR.sub("$WORK", obj)
    if isinstance(obj, list):
        return [relabel(x) for x in obj]
    if isinstance(obj, dict):
        return {k: relabel(v) for k, v in obj.items()}
    return obj


ALL_GROUPS = ["inputs", "downloads", "file_systems", "unpack", "build_prepare", "publish",
              "validation", "check_wheel", "hypothesis"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[],
                    choices=ALL_GROUPS,
                    help="run only these groups (repeatable; default: all)")
    ap.add_argument("--shared-sources", type=Path,
                    default=Path(os.environ.get("RVTORCH_CACHE") or
                                 Path.home() / ".cache" / "rvtorch") / "sources" / "debian",
                    help="where the pinned Debian files are (copied, never written)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--relabel", action="store_true",
                    help="only rewrite --output with its work-directory paths as $WORK")
    args = ap.parse_args(argv)
    if args.relabel:
        args.output.write_text(json.dumps(relabel(json.loads(args.output.read_text())),
                                          indent=1) + "\n")
        return 0
    if os.geteuid() != 0:
        raise SystemExit("bench_faults: needs root (tmpfs and read-only bind mounts)")
    groups = args.only or ALL_GROUPS
    work = Path(tempfile.mkdtemp(prefix="rvtorch-faults-"))
    www = work / "www"
    fill_mirror(www, args.shared_sources)
    t0 = time.monotonic()
    try:
        with mirror(www) as url:
            bench = Bench(work, args.shared_sources, url, www)
            for g in groups:
                getattr(bench, g)()
    finally:
        if not args.keep:
            subprocess.run(["sh", "-c", f"grep -o ' {work}[^ ]*' /proc/mounts | "
                            "xargs -r -n1 umount -l"], check=False)
            shutil.rmtree(work, ignore_errors=True)
    rows = bench.rows
    counts = {s: sum(r.status == s for r in rows) for s in ("green", "red", "skipped")}
    report = {
        "benchmark": "faults",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_start": os.getloadavg()},
        "groups": groups,
        "wall_s": round(time.monotonic() - t0, 1),
        "summary": {**counts, "total": len(rows), "all_green": counts["red"] == 0},
        "rows": relabel([asdict(r) for r in rows]),
    }
    if set(groups) != set(ALL_GROUPS) and args.output == RESULTS:
        # Only the whole catalogue is a result; a partial run goes next to the work files.
        args.output = Path(tempfile.gettempdir()) / "faults.partial.json"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["summary"]))
    print(f"results: {args.output}")
    return 0 if counts["red"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
