"""Engine detection and container handling, with fake engines on a fake PATH.

The fake engines are tiny shell scripts that behave like the real ones do on the machines we
care about (a docker client without a daemon, a podman whose crun cannot start containers, a
working buildah) and log every call, so the tests see the real command lines rvtorch runs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rvtorch import engine
from rvtorch.errors import UsageError
from tests.conftest import run_cli

DOCKER_NO_DAEMON = """#!/bin/sh
echo "docker $*" >> "$FAKE_LOG"
if [ "$1" = version ]; then
  echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2; exit 1
fi
exit 1
"""
PODMAN_CANNOT_RUN = """#!/bin/sh
echo "podman $*" >> "$FAKE_LOG"
case "$1" in
  info) echo crun; exit 0 ;;
  run) echo "Error: crun: setrlimit RLIMIT_NOFILE: Operation not permitted" >&2; exit 126 ;;
esac
exit 0
"""
BUILDAH_OK = """#!/bin/sh
echo "buildah $*" >> "$FAKE_LOG"
case "$1" in
  version) echo "Version: 1.28.2"; exit 0 ;;
  from) [ -n "$FAKE_FROM_FAILS" ] && { echo "no such image" >&2; exit 125; }; exit 0 ;;
  containers) /bin/cat "$FAKE_CONTAINERS" 2>/dev/null; exit 0 ;;
  images) /bin/cat "$FAKE_IMAGES" 2>/dev/null; exit 0 ;;
esac
exit 0
"""


def _fake(bin_dir: Path, name: str, script: str) -> None:
    p = bin_dir / name
    p.write_text(script)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.log"))
    monkeypatch.delenv("RVTORCH_ENGINE", raising=False)
    monkeypatch.delenv("RVTORCH_KEEP_CONTAINER", raising=False)
    return bin_dir


def _calls(bin_dir: Path) -> list[str]:
    log = bin_dir.parent / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_no_engine_is_a_usage_error(fake_path: Path) -> None:
    with pytest.raises(UsageError) as exc:
        engine.detect_engine()
    msg = exc.value.one_line()
    assert "no usable container engine" in msg
    assert "buildah" in msg and "\n" not in msg


def test_docker_client_without_daemon_does_not_count(fake_path: Path) -> None:
    _fake(fake_path, "docker", DOCKER_NO_DAEMON)
    with pytest.raises(UsageError, match="docker daemon not reachable"):
        engine.detect_engine()


def test_podman_that_cannot_run_falls_back_to_buildah(fake_path: Path) -> None:
    _fake(fake_path, "docker", DOCKER_NO_DAEMON)
    _fake(fake_path, "podman", PODMAN_CANNOT_RUN)
    _fake(fake_path, "buildah", BUILDAH_OK)
    eng = engine.detect_engine()
    assert isinstance(eng, engine.Buildah)
    assert any(c.startswith("podman run") for c in _calls(fake_path))


def test_podman_counts_for_build_only(fake_path: Path) -> None:
    _fake(fake_path, "podman", PODMAN_CANNOT_RUN)
    assert isinstance(engine.detect_engine(need_run=False), engine.Podman)
    with pytest.raises(UsageError, match="podman cannot run containers"):
        engine.detect_engine()


def test_forced_engine_env_and_argument(fake_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(fake_path, "podman", PODMAN_CANNOT_RUN)
    _fake(fake_path, "buildah", BUILDAH_OK)
    monkeypatch.setenv("RVTORCH_ENGINE", "buildah")
    assert isinstance(engine.detect_engine(), engine.Buildah)
    # The argument wins over the environment; the hint names the engine that works.
    with pytest.raises(UsageError, match="podman is not usable") as exc:
        engine.detect_engine("podman")
    assert exc.value.hint == "use --engine buildah, which works here"


def test_unknown_engine_suggests(fake_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RVTORCH_ENGINE", "buildha")
    with pytest.raises(UsageError) as exc:
        engine.detect_engine()
    assert "unknown container engine 'buildha'" in str(exc.value)
    assert exc.value.hint and "buildah" in exc.value.hint


def test_forced_missing_engine(fake_path: Path) -> None:
    with pytest.raises(UsageError, match="docker not found on PATH"):
        engine.detect_engine("docker")


def test_cli_without_engine_exits_2_with_one_line(fake_path: Path, tmp_path: Path) -> None:
    r = run_cli("image", "build", "--arch", "riscv64",
                env={"PATH": str(fake_path), "RVTORCH_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rvtorch: error: no usable container engine")


def test_cli_unknown_engine_and_arch(fake_path: Path) -> None:
    r = run_cli("image", "build", "--arch", "riscv64", env={"RVTORCH_ENGINE": "dokker"})
    assert r.returncode == 2 and "did you mean 'docker'" in r.stderr
    _fake(fake_path, "buildah", BUILDAH_OK)
    r = run_cli("image", "build", "--arch", "riscv32", env={"PATH": str(fake_path)})
    assert r.returncode == 2 and "unknown arch 'riscv32'" in r.stderr


def test_buildah_build_command_line(fake_path: Path) -> None:
    eng = engine.Buildah(str(fake_path / "buildah"))
    argv = eng.build_argv(Path("ctx/docker/x.Dockerfile"), Path("ctx"), "img:tag",
                          {"A": "1"}, "cross", {"l": "v"}, no_cache=True)
    assert argv[1:4] == ["bud", "--isolation", "chroot"]
    assert "--layers" in argv and ["--format", "docker"] == argv[argv.index("--format"):][:2]
    assert argv[-1] == "ctx" and "--no-cache" in argv
    assert ["--target", "cross"] == argv[argv.index("--target"):][:2]
    assert "A=1" in argv and "l=v" in argv


def test_docker_and_podman_command_lines() -> None:
    for cls in (engine.Docker, engine.Podman):
        eng = cls("/usr/bin/x")
        start = eng.start_argv("img", "rvtorch-1-abcdef12", {"/h": "/c"})
        assert start[:3] == ["/usr/bin/x", "run", "-d"] and "/h:/c" in start
        assert start[-2:] == ["img", "infinity"]
        ex = eng.exec_argv("ctr", ["ls", "-l"], {"K": "V"}, "/w")
        assert ex == ["/usr/bin/x", "exec", "-e", "K=V", "-w", "/w", "ctr", "ls", "-l"]
        fmt = ["--format", "docker", "--force-rm"] if cls is engine.Podman else []
        assert eng.build_argv(Path("f"), Path("c"), "t", {}, None, {}, False) == [
            "/usr/bin/x", "build", *fmt, "-f", "f", "-t", "t", "c"]


def test_buildah_container_runs_with_mounts_and_is_removed(fake_path: Path,
                                                           tmp_path: Path) -> None:
    _fake(fake_path, "buildah", BUILDAH_OK)
    eng = engine.detect_engine()
    with eng.container("img", mounts={tmp_path: "/data"}, env={"A": "1"}, workdir="/w") as ctr:
        ctr.call(["true"], env={"B": "2"})
    calls = _calls(fake_path)
    run_line = next(c for c in calls if c.startswith("buildah run"))
    assert "--isolation chroot" in run_line and f"-v {tmp_path.resolve()}:/data" in run_line
    assert "--env A=1 --env B=2" in run_line and "--workingdir /w" in run_line
    assert run_line.endswith("-- true")
    assert calls[-1].startswith("buildah rm rvtorch-")


def test_container_removed_when_body_or_start_fails(fake_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(fake_path, "buildah", BUILDAH_OK)
    eng = engine.detect_engine()
    with pytest.raises(RuntimeError), eng.container("img"):
        raise RuntimeError("boom")
    assert _calls(fake_path)[-1].startswith("buildah rm rvtorch-")
    monkeypatch.setenv("FAKE_FROM_FAILS", "1")
    with pytest.raises(Exception, match="buildah from img"), eng.container("img"):
        pass  # pragma: no cover - never reached
    assert _calls(fake_path)[-1].startswith("buildah rm rvtorch-")


def test_keep_container(fake_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(fake_path, "buildah", BUILDAH_OK)
    monkeypatch.setenv("RVTORCH_KEEP_CONTAINER", "1")
    eng = engine.detect_engine()
    with eng.container("img"):
        pass
    assert not any(c.startswith("buildah rm") for c in _calls(fake_path))


def test_stale_containers_of_dead_processes_are_removed(fake_path: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(fake_path, "buildah", BUILDAH_OK)
    dead = 2**22 + 12345  # above pid_max defaults: no such process
    listing = tmp_path / "containers.txt"
    listing.write_text(f"rvtorch-{dead}-0123abcd\nrvtorch-{os.getpid()}-0123abcd\nother-ctr\n")
    monkeypatch.setenv("FAKE_CONTAINERS", str(listing))
    eng = engine.detect_engine()
    assert eng.remove_stale_containers() == [f"rvtorch-{dead}-0123abcd"]
    assert f"buildah rm rvtorch-{dead}-0123abcd" in _calls(fake_path)


def test_import_with_labels(fake_path: Path, tmp_path: Path) -> None:
    _fake(fake_path, "docker", '#!/bin/sh\necho "docker $*" >> "$FAKE_LOG"\n')
    _fake(fake_path, "buildah", BUILDAH_OK)
    tarball = tmp_path / "rootfs.tar"
    engine.Docker(str(fake_path / "docker")).import_tarball(tarball, "img:1", labels={"a": "b"})
    assert _calls(fake_path)[-1] == (
        f"docker import --change LABEL a=b --change CMD /bin/bash {tarball} img:1")
    engine.Buildah(str(fake_path / "buildah")).import_tarball(tarball, "img:2", labels={"a": "b"})
    calls = _calls(fake_path)
    assert any(c.startswith("buildah from --name rvtorch-") and c.endswith(" scratch")
               for c in calls)
    assert any(c.startswith("buildah add rvtorch-") and c.endswith(f"{tarball} /") for c in calls)
    assert any(c.startswith("buildah config --cmd /bin/bash --label a=b rvtorch-") for c in calls)
    assert any(c.startswith("buildah commit --quiet rvtorch-") and c.endswith(" img:2")
               for c in calls)
    assert calls[-1].startswith("buildah rm rvtorch-")


def test_prune_selects_only_superseded_toolchain_tags(fake_path: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from rvtorch import image
    from rvtorch.targets import matrix

    _fake(fake_path, "buildah", BUILDAH_OK)
    eng = engine.detect_engine()
    current = image.current_refs(eng)
    name = matrix().project.image
    arch = matrix().arches[0]
    old = [f"{name}:{arch}-0123456789abcdef", f"{name}:{arch}-0123456789abcdef-untested"]
    keep = [current[arch].good, current[arch].alias, f"{name}-torch:{arch}-0123456789abcdef",
            "localhost/debian:trixie", f"{name}:{arch}-not-a-hash"]
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join([*old, *keep, "<none>:<none>"]) + "\n")
    monkeypatch.setenv("FAKE_IMAGES", str(listing))
    assert image.stale_images(eng) == sorted(old)
