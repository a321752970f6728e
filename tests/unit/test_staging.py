"""Staging you can always clean: temporary trees live under the cache with a locked owner record;
a run killed with SIGKILL leaves a directory the next run removes, and its tar dies with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from rvtorch import paths, sources

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from rvtorch import sources
    archive, dest = Path(sys.argv[1]), Path(sys.argv[2])
    with sources.staging(dest) as tmp:
        print(tmp, flush=True)
        sources._extract(archive, tmp / "x")
    print("done", flush=True)
""")


def _tar_pids(needle: str) -> list[int]:
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


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    c = tmp_path / "cache"
    monkeypatch.setenv("RVTORCH_CACHE", str(c))
    return c


def test_sigkill_during_unpack_kills_tar_and_the_next_run_removes_the_staging(
        tmp_path: Path, cache: Path) -> None:
    # tar reads a FIFO we feed by hand: it is provably still running when its parent is killed.
    fifo = tmp_path / "source.tar"
    os.mkfifo(fifo)
    dest = tmp_path / "trees" / "torch"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(fifo), str(dest)],
                             stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    assert child.stdout is not None
    staged = Path(child.stdout.readline().strip())
    assert staged.parent == cache / "staging", staged
    with fifo.open("wb") as feed:
        feed.write(b"\0" * 512)  # half a tar stream: tar waits for more
        feed.flush()
        deadline = time.monotonic() + 20
        while not _tar_pids(str(fifo)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _tar_pids(str(fifo)), "tar never started"
        child.send_signal(signal.SIGKILL)
        child.wait(20)
        deadline = time.monotonic() + 10
        while _tar_pids(str(fifo)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _tar_pids(str(fifo)) == [], "tar outlived its killed parent"
    # The killed run's staging is under the cache, not a hidden folder beside the destination.
    assert staged.parent == cache / "staging" and staged.is_dir()
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    # The next run (any staging of any command) removes it: its owner's lock is free.
    removed = paths.reap_stale(cache / "staging")
    assert removed == [staged]
    assert list((cache / "staging").iterdir()) == []


def test_live_staging_is_never_reaped_and_a_finished_one_leaves_nothing(
        tmp_path: Path, cache: Path) -> None:
    dest = tmp_path / "tree"
    with sources.staging(dest) as tmp:
        (tmp / "f").write_text("x")
        assert paths.reap_stale(cache / "staging") == []
        assert tmp.is_dir()
    assert (dest / "f").read_text() == "x"
    assert list((cache / "staging").iterdir()) == []
    # Replacing an existing tree goes through the same staging; nothing is left either.
    with sources.staging(dest) as tmp:
        (tmp / "g").write_text("y")
    assert [p.name for p in dest.iterdir()] == ["g"]
    assert list((cache / "staging").iterdir()) == []


def test_a_failure_removes_its_staging(tmp_path: Path, cache: Path) -> None:
    dest = tmp_path / "tree"
    with pytest.raises(RuntimeError), sources.staging(dest) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("failed")
    assert not dest.exists() and list((cache / "staging").iterdir()) == []
    with pytest.raises(RuntimeError), sources.scratch("patches-check") as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("failed")
    assert list((cache / "staging").iterdir()) == []


def test_sigterm_unwinds_the_staging_with_exit_130(tmp_path: Path, cache: Path) -> None:
    """SIGTERM is an interruption (exit 130) that removes the staging like Ctrl-C does."""
    fifo = tmp_path / "source.tar"
    os.mkfifo(fifo)
    code = textwrap.dedent("""
        import sys
        from pathlib import Path
        import rvtorch.commands.targets as targets
        from rvtorch import sources
        from rvtorch.cli import main

        def run(args):
            with sources.staging(Path(sys.argv[2])) as tmp:
                print(tmp, flush=True)
                sources._extract(Path(sys.argv[1]), tmp)

        targets.run = run  # a command of our own behind the real entry point's signal handling
        sys.exit(main(["targets"]))
    """)
    child = subprocess.Popen([sys.executable, "-c", code, str(fifo), str(tmp_path / "t")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    staged = Path(child.stdout.readline().strip())
    assert staged.parent == cache / "staging", staged
    with fifo.open("wb") as feed:
        feed.write(b"\0" * 512)
        feed.flush()
        deadline = time.monotonic() + 20
        while not _tar_pids(str(fifo)) and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=20)
    assert child.returncode == 130, err
    assert err.splitlines()[0] == "rvtorch: interrupted"
    assert not staged.exists() and list((cache / "staging").iterdir()) == []
    # tar gets its parent's death signal when the run exits; on a loaded host it may need a
    # moment to go (the same wait as the SIGKILL test above).
    deadline = time.monotonic() + 10
    while _tar_pids(str(fifo)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _tar_pids(str(fifo)) == [], "tar outlived its interrupted parent"


def test_a_tar_child_dies_with_a_parent_killed_before_prctl() -> None:
    """die_with_parent exits at once in a child whose parent is already gone."""
    from rvtorch.proc import die_with_parent

    r = subprocess.run(["true"], preexec_fn=die_with_parent(parent=1), check=False)
    assert r.returncode == 1
    r = subprocess.run(["true"], preexec_fn=die_with_parent(), check=False)
    assert r.returncode == 0


def test_corrupt_tarball_into_staging_is_exit_3(tmp_path: Path, cache: Path) -> None:
    bad = tmp_path / "x.tar.xz"
    with tarfile.open(bad, "w:xz") as tf:
        info = tarfile.TarInfo("a")
        info.size = 0
        tf.addfile(info)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(sources.SourceError) as exc, sources.staging(tmp_path / "t") as tmp:
        sources._extract(bad, tmp)
    assert exc.value.exit_code == 3
    assert list((cache / "staging").iterdir()) == []


def test_a_shared_tmp_loses_only_dead_owners_directories(tmp_path: Path) -> None:
    """A rootfs's /tmp (emulate.guest_tmpdir) is shared with the guest and other tools: a killed
    run's directory goes, a directory without an owner record stays."""
    shared = tmp_path / "rootfs-tmp"
    shared.mkdir()
    (shared / "pip-build-xyz").mkdir()  # someone else's
    code = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from rvtorch.paths import StagingDir
        st = StagingDir(Path(sys.argv[1]), "rvtorch", orphans=False)
        print(st.path, flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code, str(shared)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    killed = Path(child.stdout.readline().strip())
    assert killed.parent == shared and killed.is_dir()
    assert paths.reap_stale(shared, orphans=False) == []  # alive
    child.send_signal(signal.SIGKILL)
    child.wait(20)
    live = paths.StagingDir(shared, "rvtorch", orphans=False)  # the next run reaps on entry
    assert not killed.exists() and (shared / "pip-build-xyz").is_dir() and live.path.is_dir()
    live.release()
    assert sorted(p.name for p in shared.iterdir()) == ["pip-build-xyz"]
