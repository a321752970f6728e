"""Publishing never loses the wheel: a write error into --out keeps it under the cache, one line,
exit 2, and leaves nothing half-written in --out."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rvtorch import build
from rvtorch.errors import UsageError

NAME = "torch-2.6.0+riscv64-cp313-cp313-linux_riscv64.whl"


@pytest.fixture
def wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RVTORCH_CACHE", str(tmp_path / "cache"))
    w = tmp_path / "cache" / ".wheel-x" / "repaired" / NAME
    w.parent.mkdir(parents=True)
    w.write_bytes(os.urandom(300_000))  # incompressible: it cannot fit a 128 KiB disk
    return w


def test_an_out_that_vanished_keeps_the_wheel(wheel: Path, tmp_path: Path) -> None:
    data = wheel.read_bytes()
    with pytest.raises(UsageError, match="cannot publish") as exc:
        build.publish(wheel, Path("/proc/nope/dist"), {"steps": {}})
    kept = tmp_path / "cache" / "unpublished" / NAME
    assert exc.value.exit_code == 2 and str(kept) in exc.value.one_line()
    assert kept.read_bytes() == data


def test_a_full_out_keeps_the_wheel_and_leaves_nothing_there(wheel: Path,
                                                             tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a full file system needs a tmpfs mount (root)")
    out = tmp_path / "dist"
    out.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(out)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        data = wheel.read_bytes()
        with pytest.raises(UsageError, match="No space left") as exc:
            build.publish(wheel, out, {"steps": {}})
        assert "unpublished" in exc.value.one_line()
        assert list(out.iterdir()) == []
        assert (tmp_path / "cache" / "unpublished" / NAME).read_bytes() == data
    finally:
        subprocess.run(["umount", str(out)], check=False)


def test_a_killed_publishers_staging_is_removed_by_the_next(wheel: Path,
                                                             tmp_path: Path) -> None:
    """A publisher killed mid-copy leaves out/.publish-XXXX/<half a wheel> (what
    benchmarks/bench_faults.py produces with a real SIGKILL); the next publish removes it."""
    out = tmp_path / "dist"
    stale = out / ".publish-k1ll3d00"
    stale.mkdir(parents=True)
    (stale / NAME).write_bytes(b"PK\x03\x04 half a wheel")
    res = build.publish(wheel, out, {"steps": {}})
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [NAME, f"{NAME}.sha256", f"{NAME}.build-info.json"])
    assert res["published"] == str(out / NAME)
