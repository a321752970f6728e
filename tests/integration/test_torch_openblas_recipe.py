"""`rvtorch build --openblas recipe`: the recipe's OpenBLAS handed to the torch build for real.

The OpenBLAS package is the one tests/integration/test_deps_recipes.py builds (same recipe,
same default options, same project Conan cache): here it is only deployed, into the shared
itest cache, through the function `rvtorch build` runs when the deployment is missing. Alone on
a fresh machine this test builds it instead (docs/recipes.md: ~43 min cold on 2 cores).

Then torch is configured in the image with it (the tree of tests/integration/test_torch_build.py,
which a sysroot configure left there: the changed BLAS choice must force a reconfigure), and a
cross-built extension linked against it is repaired: the wheel must bundle the deployed
libopenblas.so.0, not the sysroot's.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from rvtorch import build
from rvtorch.targets import matrix
from tests.integration.cross_ext import EXTENSION_C
from tests.integration.test_torch_build import cli, plan_for
from tests.wheelkit import make_wheel

pytestmark = pytest.mark.integration

ARCH = "riscv64"
CTR_PREFIX = f"/rvtorch/cache/deps/{ARCH}/openblas"


@pytest.fixture(scope="module")
def deployed(env: dict[str, str], itest_cache: Path) -> dict[str, Any]:
    """Nothing deployed -> `--openblas deployed` refuses, `recipe` plans a deps build; the
    deps build (reusing the Conan cache, test_package already run by test_deps_recipes)."""
    root = itest_cache / "deps" / ARCH
    shutil.rmtree(root, ignore_errors=True)
    r = cli(env, "build", "--arch", ARCH, "--source", "debian", "--dry-run", "--openblas",
            "deployed")
    assert r.returncode == 2 and "no OpenBLAS deployed for riscv64" in r.stderr, r.stderr
    plan = build.Plan(**plan_for(env, ARCH, "--openblas", "recipe"))
    assert plan.openblas["status"] == "build" and "nothing deployed" in plan.openblas["reason"]
    assert plan.env["OpenBLAS_ROOT"] == CTR_PREFIX
    t = matrix().target(ARCH)
    # The same record, for the deploy root as this process sees it (its own cache holds the
    # Conan packages; the CLI above ran with the itest cache).
    here = dataclasses.replace(plan, openblas=build.openblas_plan(t, "recipe", root=root))
    record = build.ensure_openblas(here, root=root, test=False)
    assert record["status"] == "deployed"
    assert (root / "openblas" / "include" / "cblas.h").is_file()
    return record


def test_configure_uses_the_recipe_openblas(env: dict[str, str], deployed: dict[str, Any]
                                            ) -> None:
    plan = build.Plan(**plan_for(env, ARCH, "--openblas", "recipe"))
    ob = plan.openblas
    assert ob["status"] == "deployed" and ob["sha256"] == deployed["sha256"]
    assert ob["ref"] == deployed["ref"] and ob["options"] == deployed["options"]
    tree = Path(plan.tree)
    log = tree / "build" / "rvtorch-build.log"
    offset = log.stat().st_size if log.exists() else 0
    stamp = tree / "build" / f".rvtorch-configure-{build.configure_digest(plan)}"
    # A rerun of this test configures again, as after test_torch_build.py's sysroot configure.
    stamp.unlink(missing_ok=True)
    configured_before = (tree / "build" / "CMakeCache.txt").exists()

    r = cli(env, "build", "--arch", ARCH, "--source", "debian", "--stage", "configure",
            "--jobs", "2", "--openblas", "recipe")
    assert r.returncode == 0, r.stderr
    assert "has no LAPACK" not in r.stderr  # the default recipe build has LAPACK
    text = log.read_text(errors="replace")[offset:]
    if configured_before:
        assert "the configure flags changed since the last run: reconfiguring" in text
    assert f"Found OpenBLAS libraries: {CTR_PREFIX}/lib/libopenblas.so" in text
    # torch's FindLAPACK finds LAPACK in the recipe's OpenBLAS (cheev_ from the merged
    # reference LAPACK, with libgfortran from the sysroot behind it).
    assert "It seems OpenBlas has not been compiled with Lapack support" not in text
    assert "Found a library with LAPACK API (open)" in text
    assert stamp.exists()

    cache = (tree / "build" / "CMakeCache.txt").read_text()
    assert "BLAS:STRING=OpenBLAS" in cache
    assert f"OpenBLAS_LIB:FILEPATH={CTR_PREFIX}/lib/libopenblas.so" in cache
    assert f"OpenBLAS_INCLUDE_DIR:PATH={CTR_PREFIX}/include" in cache
    assert "/usr/lib/riscv64-linux-gnu/libopenblas.so" not in cache
    assert deployed["options"]["build_lapack"] == "True"
    assert "OPEN_LAPACK_WORKS:INTERNAL=1\n" in cache  # CMake's cheev_ check links and passes
    # The compile lines of the BLAS glue see the prefix's cblas.h before the sysroot's.
    ninja = (tree / "build" / "build.ninja").read_text(errors="replace")
    assert f"-isystem {CTR_PREFIX}/include" in ninja
    info = json.loads((tree / "build" / "rvtorch-build-info.json").read_text())
    assert info["openblas"]["sha256"] == deployed["sha256"]
    assert info["plan"]["openblas"]["choice"] == "recipe"


def _extension_wheel(t: Any, prefix: Path, work: Path) -> Path:
    """torch._C cross-compiled in the toolchain image against the deployed OpenBLAS."""
    from rvtorch.engine import detect_engine
    from rvtorch.image import ensure_image
    from rvtorch.wheel import expected_soabi, wheel_arch_suffix

    gcc, py = matrix().project.gcc, matrix().project.python
    src = work / "src"
    src.mkdir(parents=True)
    (src / "ext.c").write_text(EXTENSION_C)
    so = f"_C.{expected_soabi(t)}.so"
    with detect_engine().container(ensure_image(t.arch),
                                   mounts={src: "/src", prefix: "/ob"}) as ctr:
        ctr.call([f"{t.triple}-gcc-{gcc}", *t.cflags.split(), "-O2", "-fPIC", "-shared",
                  f"-I/usr/include/python{py}", f"-I/usr/include/{t.triple}/python{py}",
                  "-I/ob/include", "/src/ext.c", "-o", f"/src/{so}", "-L/ob/lib", "-lopenblas"])
    return make_wheel(work / "wheel", {"torch/__init__.py": "from . import _C\n",
                                       f"torch/{so}": src / so},
                      version=f"2.6.0+{t.arch}", tag=f"cp313-cp313-linux_{wheel_arch_suffix(t)}")


def test_repair_bundles_the_deployed_openblas(deployed: dict[str, Any], tmp_path: Path) -> None:
    from rvtorch.errors import BuildError
    from rvtorch.wheel import check_wheel, image_sysroot, repair_wheel

    t = matrix().target(ARCH)
    if not shutil.which(f"{t.triple}-strip"):
        pytest.skip(f"apt-get install binutils-{t.triple}")
    wheel = _extension_wheel(t, Path(deployed["prefix"]), tmp_path / "build")
    with image_sysroot(ARCH) as root:
        ours = repair_wheel(wheel, t, tmp_path / "recipe",
                            lib_path=build.repair_lib_path(deployed, t, root), sysroot=root)
        sysroot = build.openblas_plan(t, "sysroot")
        theirs = repair_wheel(wheel, t, tmp_path / "sysroot",
                              lib_path=build.repair_lib_path(sysroot, t, root), sysroot=root)
    info = build.bundled_openblas(ours, deployed)
    assert info["matches_deployed"] is True and info["sha256"] == deployed["sha256"]
    bundled = [Path(b).name for b in check_wheel(ours, ARCH).bundled_libs]
    # Both have LAPACK with Fortran-compiled reference routines: libgfortran comes along.
    assert any(b.startswith("libgfortran") for b in bundled), bundled
    assert any(b.startswith("libgfortran")
               for b in (Path(x).name for x in check_wheel(theirs, ARCH).bundled_libs))
    # The check fails when the sysroot's copy is what got bundled.
    with pytest.raises(BuildError, match="not the deployed"):
        build.bundled_openblas(theirs, deployed)
