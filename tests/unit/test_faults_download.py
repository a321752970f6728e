"""Downloads under faults, against a real HTTP server on 127.0.0.1: a dropped connection is
resumed (in this run, else the next), a hint to rerun appears only where a rerun can help, and a
read-only or full cache is an environment error (exit 2) found before the download."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from rvtorch import sources
from rvtorch.errors import SourceError, UsageError
from rvtorch.torchspec import PinnedFile, torch_version
from tests.conftest import run_cli


class _Mirror(http.server.SimpleHTTPRequestHandler):
    """Serves files with Range support; ``drop_every`` cuts every response after that many
    bytes (a mirror that keeps dropping)."""

    drop_every: ClassVar[int | None] = None
    ranges: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        type(self).ranges.append(rng or "")
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        body = data[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = type(self).drop_every
        self.wfile.write(body[:cut] if cut is not None else body)
        self.wfile.flush()
        if cut is not None:
            self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _Mirror(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _Mirror.ranges = []
    _Mirror.drop_every = None
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def _payload(root: Path, name: str, size: int = 600_000) -> tuple[bytes, PinnedFile]:
    data = hashlib.sha256(name.encode()).digest() * (size // 32)
    (root / name).write_bytes(data)
    return data, PinnedFile(name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def test_a_mirror_that_keeps_dropping_still_finishes(mirror: tuple[str, Path],
                                                     tmp_path: Path) -> None:
    url, root = mirror
    data, pin = _payload(root, "f.tar.xz")
    _Mirror.drop_every = 150_000
    dest = tmp_path / "f.tar.xz"
    sources.download(f"{url}/f.tar.xz", dest, pin)
    assert dest.read_bytes() == data
    assert _Mirror.ranges == ["", "bytes=150000-", "bytes=300000-", "bytes=450000-"]


def test_a_download_cut_in_every_run_is_kept_and_resumed_by_the_next(
        mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, root = mirror
    data, pin = _payload(root, "f.tar.xz")
    _Mirror.drop_every = 100_000
    dest = tmp_path / "f.tar.xz"
    part = tmp_path / "f.tar.xz.part"
    for n in (1, 2):
        with pytest.raises(SourceError, match="interrupted") as exc:
            sources.download(f"{url}/f.tar.xz", dest, pin, attempts=2)
        assert "rerun to resume" in exc.value.one_line()
        assert part.stat().st_size == 200_000 * n and not dest.exists()
    _Mirror.drop_every = None
    sources.download(f"{url}/f.tar.xz", dest, pin)
    assert dest.read_bytes() == data and not part.exists()


def test_a_truncated_file_in_the_cache_is_resumed_not_deleted(mirror: tuple[str, Path],
                                                              tmp_path: Path) -> None:
    url, root = mirror
    data, pin = _payload(root, "f.tar.xz")
    dest = tmp_path / "f.tar.xz"
    dest.write_bytes(data[:250_000])
    sources.download(f"{url}/f.tar.xz", dest, pin)
    assert dest.read_bytes() == data and _Mirror.ranges == ["bytes=250000-"]


def test_a_complete_file_with_the_wrong_hash_is_deleted(mirror: tuple[str, Path],
                                                        tmp_path: Path) -> None:
    url, root = mirror
    data, pin = _payload(root, "f.tar.xz")
    (root / "f.tar.xz").write_bytes(b"x" * len(data))  # the mirror serves another file
    dest = tmp_path / "f.tar.xz"
    with pytest.raises(SourceError, match=r"sha256 .* != pinned") as exc:
        sources.download(f"{url}/f.tar.xz", dest, pin)
    assert exc.value.exit_code == 3
    assert list(tmp_path.iterdir()) == [root]


def test_a_complete_answer_of_another_size_is_deleted_not_resumed(
        mirror: tuple[str, Path], tmp_path: Path) -> None:
    """The server delivers its whole answer (Content-Length honoured) but it is not the pinned
    size: a wrong file, not a cut connection; resuming it would loop on the same bytes."""
    url, root = mirror
    _, pin = _payload(root, "f.tar.xz")
    (root / "f.tar.xz").write_bytes(b"not an xz archive " * 64)
    dest = tmp_path / "f.tar.xz"
    with pytest.raises(SourceError) as exc:
        sources.download(f"{url}/f.tar.xz", dest, pin)
    assert exc.value.exit_code == 3
    assert f"the mirror serves 1152 bytes, the pin says {pin.size}; file deleted" in str(exc.value)
    assert "resume" not in exc.value.one_line()
    assert list(tmp_path.iterdir()) == [root]
    assert len(_Mirror.ranges) == 1  # one request, no resume loop


def test_no_resume_hint_where_a_rerun_cannot_help(mirror: tuple[str, Path],
                                                  tmp_path: Path) -> None:
    url, root = mirror
    _, pin = _payload(root, "f.tar.xz")
    with pytest.raises(SourceError, match="HTTP 404") as exc:
        sources.download(f"{url}/missing.tar.xz", tmp_path / "f.tar.xz", pin)
    assert "rerun" not in exc.value.one_line()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError, match="connection refused") as exc:
        sources.download(f"http://127.0.0.1:{port}/f.tar.xz", tmp_path / "f.tar.xz", pin)
    assert "rerun" not in exc.value.one_line()
    assert list(tmp_path.iterdir()) == [root]


# --------------------------------------------------------------------- read-only / full caches
@contextlib.contextmanager
def _mounted(kind: str, path: Path, size: str = "1m") -> Iterator[None]:
    """``path`` made read-only (``ro``) or a tiny tmpfs (``tmpfs``) for the test's duration.

    Root ignores permission bits, so root gets real mounts; others get chmod for read-only."""
    if os.geteuid() != 0:
        if kind != "ro":
            pytest.skip("a full file system needs a tmpfs mount (root)")
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)
        return
    if kind == "ro":
        cmds = [["mount", "--bind", str(path), str(path)],
                ["mount", "-o", "remount,bind,ro", str(path)]]
    else:
        cmds = [["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]]
    mounted = False
    try:
        for cmd in cmds:
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if r.returncode != 0:
                pytest.skip(f"cannot mount here: {r.stderr.strip()}")
            mounted = True
        yield
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=False)


def _fake_pins_present(cache: Path) -> Path:
    """Every pinned Debian file of torch 2.6.0 present at its pinned size, with wrong bytes."""
    tv = torch_version("2.6.0")
    deb = cache / "sources" / "debian"
    deb.mkdir(parents=True)
    for pin in [*tv.debian.files, *(v.file for v in tv.debian.vendored)]:
        with (deb / pin.name).open("wb") as fh:
            fh.truncate(pin.size)
    return deb


def test_read_only_sources_dir_is_exit_2_before_any_download(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    deb = cache / "sources" / "debian"
    deb.mkdir(parents=True)
    with _mounted("ro", deb):
        r = run_cli("source", "fetch", "--source", "debian", "--debian-mirror",
                    "http://127.0.0.1:9/debian", env={"RVTORCH_CACHE": str(cache)})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rvtorch: error: source cache")
    assert "rerun to resume" not in r.stderr


def test_corrupt_file_in_a_read_only_sources_dir_is_exit_3_one_line(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    deb = _fake_pins_present(cache)
    with _mounted("ro", deb):
        r = run_cli("source", "fetch", "--source", "debian", "--debian-mirror",
                    "http://127.0.0.1:9/debian", env={"RVTORCH_CACHE": str(cache)})
    assert r.returncode == 3, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "cannot be deleted" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_a_full_disk_is_exit_2_keeps_the_partial_and_says_no_resume(
        mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, root = mirror
    data, pin = _payload(root, "big.tar.xz", size=3_000_000)
    cache = tmp_path / "small"
    cache.mkdir()
    with _mounted("tmpfs", cache, size="1m"):
        with pytest.raises(UsageError, match="no space left") as exc:
            sources.download(f"{url}/big.tar.xz", cache / "big.tar.xz", pin)
        assert "rerun to resume" not in exc.value.one_line()
        part = cache / "big.tar.xz.part"
        assert 0 < part.stat().st_size < len(data)
        kept = part.read_bytes()
    assert data.startswith(kept)
