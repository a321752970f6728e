"""Unit tests of rvtorch.rootfs: cache layout, completion stamp, stale temp dirs, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rvtorch import rootfs
from rvtorch.errors import UsageError
from rvtorch.targets import matrix
from tests.conftest import run_cli


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RVTORCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_names_follow_suite_and_debian_arch(cache: Path) -> None:
    suite = matrix().project.suite
    assert rootfs.rootfs_name("riscv64") == f"{suite}-riscv64"
    assert rootfs.rootfs_name("aarch64", True) == f"{suite}-arm64-torch"
    assert rootfs.rootfs_name("host", True) == f"{suite}-{rootfs.host_debian_arch()}-torch"
    assert rootfs.rootfs_path("riscv64") == cache / "rootfs" / f"{suite}-riscv64"


def test_recipe_hash_differs_per_arch_and_torch() -> None:
    hashes = {rootfs.recipe_hash(a, w) for a in ("riscv64", "aarch64") for w in (False, True)}
    assert len(hashes) == 4


def _fake_complete(path: Path, arch: str, with_torch: bool, links: str = "relative") -> None:
    (path / "usr/bin").mkdir(parents=True)
    rootfs.manifest_path(path).write_text(json.dumps(
        {"arch": arch, "recipe_hash": rootfs.recipe_hash(arch, with_torch), "links": links}))


def test_completion_stamp(cache: Path) -> None:
    path = rootfs.rootfs_path("riscv64")
    assert not rootfs.is_complete(path, "riscv64", False)
    (path / "usr/bin").mkdir(parents=True)
    # A directory without its manifest is a creation that died after the rename: not reused.
    assert not rootfs.is_complete(path, "riscv64", False)
    rootfs.manifest_path(path).write_text(json.dumps({"recipe_hash": "0" * 16}))
    assert not rootfs.is_complete(path, "riscv64", False)  # made by another recipe
    rootfs.manifest_path(path).write_text("{not json")
    assert not rootfs.is_complete(path, "riscv64", False)
    rootfs.manifest_path(path).unlink()
    shutil.rmtree(path)
    _fake_complete(path, "riscv64", False)
    assert rootfs.is_complete(path, "riscv64", False)
    assert not rootfs.is_complete(path, "riscv64", True)
    # A complete rootfs is returned as is: no root, debootstrap or network needed.
    assert rootfs.ensure_rootfs("riscv64") == path


def test_stale_temp_dirs_are_removed(cache: Path) -> None:
    root = rootfs.rootfs_root()
    stale = root / ".trixie-riscv64.tmp-12345"
    (stale / "usr/bin").mkdir(parents=True)
    other = root / ".trixie-arm64.tmp-1"
    other.mkdir()
    rootfs._clean_stale(root, "trixie-riscv64")
    assert not stale.exists() and other.exists()


def test_remove_and_list(cache: Path) -> None:
    path = rootfs.rootfs_path("aarch64", True)
    _fake_complete(path, "aarch64", True)
    assert [i["name"] for i in rootfs.list_rootfs()] == [path.name]
    assert rootfs.remove_rootfs("aarch64", True)
    assert not path.exists() and not rootfs.manifest_path(path).exists()
    assert not rootfs.remove_rootfs("aarch64", True)


def test_needs_root_to_create(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs, "is_root", lambda: False)
    with pytest.raises(UsageError) as exc:
        rootfs.ensure_rootfs("riscv64", True)
    assert "sudo rvtorch rootfs create --arch riscv64 --with-torch" in exc.value.one_line()


def test_cli_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    env = {"RVTORCH_CACHE": str(tmp_path / "c")}
    r = run_cli("rootfs", "create", "--arch", "riscv6", env=env)
    assert r.returncode == 2 and "did you mean 'riscv64'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli("rootfs", "path", "--arch", "aarch64", env=env)
    assert r.returncode == 2 and "rvtorch rootfs create --arch aarch64" in r.stderr
    r = run_cli("run", "--arch", "riscv64", "--cpu", "rvv12", "--", "true", env=env)
    assert r.returncode == 2 and "did you mean" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli("run", "--arch", "riscv64", env=env)
    assert r.returncode == 2 and "no command" in r.stderr


@pytest.mark.parametrize("args", [("rootfs", "create", "--arch", "riscv64"),
                                  ("run", "--arch", "riscv64", "--", "true")])
def test_unwritable_cache_is_exit_2(args: tuple[str, ...]) -> None:
    r = run_cli(*args, env={"RVTORCH_CACHE": "/proc/x"})
    assert r.returncode == 2, r.stderr
    assert "not writable" in r.stderr and "RVTORCH_CACHE" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_ensure_many_reuses_complete_rootfs(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs, "is_root", lambda: False)  # creating anything would fail
    specs = [("riscv64", True), ("aarch64", False)]
    for arch, torch in specs:
        _fake_complete(rootfs.rootfs_path(arch, torch), arch, torch)
    made = rootfs.ensure_many(specs, jobs=2)
    assert made == {s: rootfs.rootfs_path(*s) for s in specs}
    with pytest.raises(UsageError, match="unknown arch"):
        rootfs.ensure_many([("riscv32", False)])


def test_foreign_rootfs_work_runs_on_the_fast_emulation_cpu() -> None:
    """Maintainer scripts under QEMU get targets.toml's emulation_cpu (aarch64: no pointer
    authentication, 14x faster under qemu-user 7.2) and nothing from the host environment."""
    from rvtorch import rootfs
    from rvtorch.targets import matrix

    for t in matrix().targets:
        env = rootfs._build_env(t)
        assert env["QEMU_CPU"] == t.emulation_cpu
        assert env["DEBIAN_FRONTEND"] == "noninteractive"
    assert "pauth=off" in matrix().target("aarch64").emulation_cpu
    assert "QEMU_CPU" not in rootfs._build_env(None)


def test_absolute_links_become_relative_and_mean_the_same(tmp_path: Path) -> None:
    """Debian's alternatives are absolute links; under explicit `qemu -L` the kernel would
    follow them on the host (libblas.so.3 -> /etc/alternatives/... -> the host's file)."""
    root = tmp_path / "rootfs"
    lib = root / "usr/lib/riscv64-linux-gnu"
    (lib / "openblas-pthread").mkdir(parents=True)
    (lib / "openblas-pthread/libblas.so.3").write_text("openblas")
    (root / "etc/alternatives").mkdir(parents=True)
    (root / "etc/alternatives/libblas.so.3-riscv64-linux-gnu").symlink_to(
        "/usr/lib/riscv64-linux-gnu/openblas-pthread/libblas.so.3")
    (lib / "libblas.so.3").symlink_to("/etc/alternatives/libblas.so.3-riscv64-linux-gnu")
    (lib / "rel.so").symlink_to("libblas.so.3")
    (root / "bin").symlink_to("/usr/bin")  # a directory link: rewritten, not descended
    assert len(rootfs.absolute_links(root)) == 3
    assert rootfs.relative_links(root) == 3
    assert rootfs.absolute_links(root) == []
    assert (lib / "libblas.so.3").read_text() == "openblas"  # resolves on the host, as is
    assert str((lib / "libblas.so.3").readlink()) == \
        "../../../etc/alternatives/libblas.so.3-riscv64-linux-gnu"
    assert str((root / "bin").readlink()) == "usr/bin"
    assert str((lib / "rel.so").readlink()) == "libblas.so.3"  # relative ones untouched
    assert rootfs.relative_links(root) == 0
    assert not list(root.rglob(".*rvtorch-relink"))


def test_a_cached_rootfs_with_absolute_links_is_fixed_in_place(cache: Path,
                                                              monkeypatch) -> None:
    final = rootfs.rootfs_path("riscv64", True)
    _fake_complete(final, "riscv64", True, links="")  # made before links were fixed
    (final / "etc").mkdir()
    (final / "etc/os-release").write_text("x")
    (final / "usr/bin/abs").symlink_to("/etc/os-release")
    monkeypatch.setattr(rootfs, "is_root", lambda: False)
    with pytest.raises(UsageError, match="absolute symlinks"):
        rootfs.ensure_rootfs("riscv64", True)
    monkeypatch.setattr(rootfs, "is_root", lambda: True)
    assert rootfs.ensure_rootfs("riscv64", True) == final  # fixed, not remade
    assert str((final / "usr/bin/abs").readlink()) == "../../etc/os-release"
    m = rootfs.read_manifest(final)
    assert m is not None and m["links"] == "relative" and m["relinked"] == 1
