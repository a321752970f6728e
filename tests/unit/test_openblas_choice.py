"""`rvtorch build --openblas sysroot|recipe|deployed`: the plan, the environment, the configure
digest, the repair's library path and the check that the wheel bundles the deployed OpenBLAS.

A deployment is written the way `rvtorch deps build` writes it (``deps._write_metadata``) into a
throw-away cache; its "library" is a real ELF file (a stdlib extension module of this Python).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from rvtorch import build, deps
from rvtorch.errors import BuildError, UsageError
from rvtorch.targets import target
from rvtorch.wheel import patchelf_tool
from tests.conftest import run_cli
from tests.wheelkit import make_wheel

CTR_PREFIX = "/rvtorch/cache/deps/riscv64/openblas"


def _host_elves() -> list[Path]:
    dynload = sysconfig.get_config_var("DESTSHARED") or ""
    found = sorted(Path(p) for p in glob.glob(str(Path(dynload) / "*.so")))
    if len(found) < 2:
        pytest.skip("no stdlib extension modules to use as ELF files")
    return found


def deploy(cache: Path, *, lib: Path | None = None, **spec_kw: object) -> Path:
    """A deployed OpenBLAS prefix as `deps build` leaves it, under ``cache``."""
    root = cache / "deps" / "riscv64"
    prefix = root / "openblas"
    (prefix / "include").mkdir(parents=True)
    (prefix / "lib").mkdir()
    (prefix / "include" / "cblas.h").write_text("/* cblas */\n")
    real = prefix / "lib" / "libopenblasp-r0.3.34.so"
    shutil.copy(lib or _host_elves()[0], real)
    for link in ("libopenblas.so", "libopenblas.so.0"):
        (prefix / "lib" / link).symlink_to(real.name)
    deps._write_metadata(root, [deps.openblas_spec(target("riscv64"), **spec_kw)])  # type: ignore[arg-type]
    return prefix


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    path.mkdir()
    monkeypatch.setenv("RVTORCH_CACHE", str(path))
    return path


def plan(openblas: str, **kw: object) -> build.Plan:
    return build.make_plan("riscv64", provider="debian", openblas=openblas, **kw)  # type: ignore[arg-type]


def test_sysroot_is_the_default_and_adds_nothing(cache: Path) -> None:
    p = build.make_plan("riscv64", provider="debian")
    assert p.openblas == {"choice": "sysroot", "package": "libopenblas-dev:riscv64",
                          "library": "/usr/lib/riscv64-linux-gnu/libopenblas.so",
                          "status": "in the image"}
    assert not {k for k in p.env if k.startswith("OpenBLAS")}
    assert p.env["BLAS"] == "OpenBLAS"  # torch.toml's choice, unchanged


def test_recipe_not_deployed_is_built_first(cache: Path) -> None:
    p = plan("recipe")
    ob = p.openblas
    assert ob["status"] == "build" and "nothing deployed" in ob["reason"]
    assert ob["ref"] == f"openblas/{deps.OPENBLAS_VERSION}"
    assert ob["options"]["dynamic_list"] == "RISCV64_GENERIC RISCV64_ZVL128B RISCV64_ZVL256B"
    assert ob["prefix"] == str(cache / "deps" / "riscv64" / "openblas")
    assert "sha256" not in ob
    # Container paths: the cache is mounted at /rvtorch/cache.
    assert p.env["OpenBLAS_ROOT"] == p.env["OpenBLAS_HOME"] == CTR_PREFIX
    assert p.env["OpenBLAS_LIB"] == f"{CTR_PREFIX}/lib/libopenblas.so"
    assert p.env["OpenBLAS_INCLUDE_DIR"] == f"{CTR_PREFIX}/include"
    assert "-DBLAS=OpenBLAS" in p.cmake
    assert any("rvtorch deps build --arch riscv64 --only openblas" in n for n in p.notes)
    # With LAPACK by default (the +ds source merges the target's liblapack_pic.a).
    assert ob["options"]["build_lapack"] == "True"
    assert not any("LAPACK" in n for n in p.notes)


def test_recipe_deployed_is_used_with_its_sha256(cache: Path) -> None:
    prefix = deploy(cache)
    ob = plan("recipe").openblas
    real = prefix / "lib" / "libopenblasp-r0.3.34.so"
    assert ob["status"] == "deployed" and ob["library_file"] == real.name
    assert ob["sha256"] == hashlib.sha256(real.read_bytes()).hexdigest()
    assert plan("deployed").openblas == {**ob, "choice": "deployed"}


def test_recipe_rebuilds_a_deployment_with_other_options(cache: Path) -> None:
    deploy(cache, static_target="RISCV64_GENERIC", build_lapack=False)
    ob = plan("recipe").openblas
    assert ob["status"] == "build"
    assert "other build_lapack, dynamic_arch, dynamic_list, target" in ob["reason"]
    # `deployed` takes it as it is (and then has no LAPACK: the plan says so).
    dep = plan("deployed")
    assert dep.openblas["status"] == "deployed"
    assert dep.openblas["options"]["build_lapack"] == "False"
    assert any("no LAPACK" in n for n in dep.notes)


def test_incomplete_deployment_counts_as_missing(cache: Path) -> None:
    prefix = deploy(cache)
    (prefix / "lib" / "libopenblas.so.0").unlink()
    assert "has no lib/libopenblas.so.0" in plan("recipe").openblas["reason"]
    with pytest.raises(UsageError, match="no OpenBLAS deployed for riscv64"):
        plan("deployed")


def test_unknown_choice_is_a_usage_error(cache: Path) -> None:
    with pytest.raises(UsageError, match="unknown --openblas 'recipes'") as exc:
        plan("recipes")
    assert "did you mean 'recipe'" in exc.value.one_line()


def test_the_blas_choice_is_part_of_the_configure_digest(cache: Path) -> None:
    """setup.py configures once; OpenBLAS_ROOT is an environment variable CMake reads, not a -D
    option, so the digest must name it or a tree configured with the sysroot's keeps it."""
    d = build.configure_digest
    sysroot = plan("sysroot")
    recipe = plan("recipe")
    assert sorted(recipe.cmake) == sorted(sysroot.cmake)  # no -D option differs ...
    assert d(recipe) != d(sysroot)  # ... yet the configure is redone
    deploy(cache)
    assert d(plan("recipe")) == d(recipe)  # deploying it does not change what CMake sees
    # Any variable FindOpenBLAS reads counts, whoever set it.
    moved = dataclasses.replace(sysroot, env={**sysroot.env, "OpenBLAS_HOME": "/opt/ob"})
    assert d(moved) != d(sysroot)
    script = build.build_script(recipe, binfmt="none")
    assert f"build/.rvtorch-configure-{d(recipe, 'none')}" in script


def test_dry_run_shows_the_openblas(cache: Path) -> None:
    prefix = deploy(cache)
    env = {"RVTORCH_CACHE": str(cache)}
    r = run_cli("build", "--arch", "riscv64", "--source", "debian", "--openblas", "recipe",
                "--dry-run", env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["openblas"]["prefix"] == str(prefix) and out["openblas"]["status"] == "deployed"
    assert out["openblas"]["ref"] == f"openblas/{deps.OPENBLAS_VERSION}"
    assert len(out["openblas"]["sha256"]) == 64
    assert out["env"]["OpenBLAS_ROOT"] == CTR_PREFIX


@pytest.mark.parametrize("args", [["--openblas", "deployed"], ["--openblas", "bogus"]])
def test_bad_openblas_input_exits_2(cache: Path, args: list[str]) -> None:
    r = run_cli("build", "--arch", "riscv64", "--source", "debian", "--dry-run", *args,
                env={"RVTORCH_CACHE": str(cache)})
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "error:" in last and ("no OpenBLAS deployed" in last or "'bogus'" in last)


def test_repair_looks_in_the_recipe_prefix_first(cache: Path, tmp_path: Path) -> None:
    t = target("riscv64")
    root = tmp_path / "image-root"
    sysroot_dirs = [root / "usr/lib/riscv64-linux-gnu", root / "lib/riscv64-linux-gnu",
                    root / "usr/lib"]
    assert build.repair_lib_path(plan("sysroot").openblas, t, root) == sysroot_dirs
    prefix = deploy(cache)
    assert build.repair_lib_path(plan("recipe").openblas, t, root) == [prefix / "lib",
                                                                        *sysroot_dirs]


def _graft(src: Path, dest: Path) -> Path:
    """What auditwheel does to a library it bundles: strip, new soname, $ORIGIN rpath."""
    shutil.copy(src, dest)
    subprocess.run(["strip", "--strip-unneeded", str(dest)], check=True)
    subprocess.run([patchelf_tool(), "--set-soname", dest.name, "--set-rpath", "$ORIGIN",
                    str(dest)], check=True)
    return dest


def test_bundled_openblas_must_be_the_deployed_one(cache: Path, tmp_path: Path) -> None:
    if not shutil.which("strip"):
        pytest.skip("no strip on this machine")
    ours, other = _host_elves()[:2]
    prefix = deploy(cache, lib=ours)
    record = plan("recipe").openblas
    member = "torch.libs/libopenblasp-r0-1a2b3c4d.3.34.so"
    good = make_wheel(tmp_path / "good", {member: _graft(ours, tmp_path / "a.so")})
    info = build.bundled_openblas(good, record)
    assert info["bundled"] == member and info["matches_deployed"] is True
    assert info["sha256"] == record["sha256"] and info["prefix"] == str(prefix)

    bad = make_wheel(tmp_path / "bad", {member: _graft(other, tmp_path / "b.so")})
    with pytest.raises(BuildError, match="not the deployed openblas/"):
        build.bundled_openblas(bad, record)
    # The sysroot choice records what was bundled without comparing.
    assert build.bundled_openblas(bad, plan("sysroot").openblas)["bundled"] == member
    none = make_wheel(tmp_path / "none", {"torch/__init__.py": ""})
    with pytest.raises(BuildError, match="bundles 0 libopenblas files"):
        build.bundled_openblas(none, record)
    assert build.bundled_openblas(none, plan("sysroot").openblas)["bundled"] == []


def test_lapack_on_a_ds_source_brings_the_targets_liblapack_pic() -> None:
    """The +ds source has no lapack-netlib/: the build container gets liblapack-dev:<arch>
    (liblapack_pic.a) first; without LAPACK, or from an upstream tarball, nothing is installed."""
    rv = target("riscv64")
    spec = deps.openblas_spec(rv)
    assert spec.options["build_lapack"] == "True" and "+ds" in spec.version
    assert spec.setup[-1][-1] == "liblapack-dev:riscv64"
    assert deps.openblas_spec(rv, build_lapack=False).setup == ()
    assert deps.openblas_spec(rv, version="0.3.34").setup == ()
    arm = deps.openblas_spec(target("aarch64"), static_target="ARMV8")
    assert arm.setup[-1][-1] == "liblapack-dev:arm64"
