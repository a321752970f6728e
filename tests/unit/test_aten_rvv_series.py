"""The optional patch groups of series.toml ([[optional]], e.g. aten-rvv): they never reach the
default series, its digest or ``for_provider``; a build that names a feature gets them after the
default series; a malformed entry is a one-line usage error (exit 2)."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from rvtorch.errors import UsageError
from rvtorch.patches import load_series, series_for
from rvtorch.torchspec import torch_version


def _default_digest(directory: Path, provider: str) -> str:
    """The digest as it was before optional groups existed: top-level patches only."""
    series = load_series(directory)
    h = hashlib.sha256()
    for p in series.patches:
        if provider in p.providers:
            h.update(p.file.encode() + b"\0" + (directory / p.file).read_bytes() + b"\0")
    return h.hexdigest()


def test_aten_rvv_group_is_optional_and_documented() -> None:
    tv = torch_version()
    series = series_for(tv)
    assert series.features() == ("aten-rvv",)
    vec, capability, generic = series.optional[:3]
    for rvv in series.optional:
        assert rvv.feature == "aten-rvv" and rvv.type == "feature"
        assert rvv.file.startswith("aten-rvv/") and rvv.path.is_file()
        # Not in the default series: every build and its tree digest stay as they were.
        assert rvv not in series.patches
        assert rvv not in series.for_provider("debian")
        text = rvv.path.read_text()
        assert text.startswith("From ") and "Subject: [PATCH" in text
        for word in ("Symptom", "Cause", "Alternatives", "Upstream status"):
            assert word in text, (rvv.file, word)
    assert all("/" not in p.file for p in series.patches)
    assert series.digest("debian") == _default_digest(tv.patch_dir, "debian")
    # Named: after the whole default series, in file order, and a different digest (tree).
    named = series.for_provider("debian", ["aten-rvv"])
    assert named[: len(series.patches)] == series.for_provider("debian")
    assert named[len(series.patches):] == series.optional
    assert series.digest("debian", ["aten-rvv"]) != series.digest("debian")
    # 0001 adds the RVV Vectorized, selected by CPU_CAPABILITY_RVV; 0002 the kernels capability.
    added = re.findall(r"^\+\+\+ b/(\S+)", vec.path.read_text(), re.M)
    assert "aten/src/ATen/cpu/vec/vec256/rvv/vec256_float_rvv.h" in added
    assert "aten/src/ATen/cpu/vec/vec256/rvv/vec256_double_rvv.h" in added
    changed = re.findall(r"^\+\+\+ b/(\S+)", capability.path.read_text(), re.M)
    assert {"cmake/Codegen.cmake", "aten/src/ATen/native/DispatchStub.cpp"} <= set(changed)
    # 0003: the two kernel files whose RVV copy takes the generic path.
    fallback = re.findall(r"^\+\+\+ b/(\S+)", generic.path.read_text(), re.M)
    assert set(fallback) == {"aten/src/ATen/native/cpu/LerpKernel.cpp",
                             "aten/src/ATen/native/cpu/DepthwiseConvKernel.cpp"}


def test_unknown_feature_is_a_usage_error() -> None:
    series = series_for(torch_version())
    with pytest.raises(UsageError, match=r"no optional patch group 'aten-rvx'") as exc:
        series.for_provider("debian", ["aten-rvx"])
    assert exc.value.hint and "aten-rvv" in exc.value.hint


@pytest.fixture
def series_dir(tmp_path: Path) -> Path:
    d = tmp_path / "series"
    shutil.copytree(torch_version().patch_dir, d)
    return d


def _edit(d: Path, old: str, new: str) -> None:
    manifest = d / "series.toml"
    text = manifest.read_text()
    assert old in text
    manifest.write_text(text.replace(old, new, 1))


def test_optional_file_must_be_listed(series_dir: Path) -> None:
    (series_dir / "aten-rvv" / "0002-extra.patch").write_text("From x\n")
    with pytest.raises(UsageError, match=r"aten-rvv/0002-extra\.patch is not listed"):
        load_series(series_dir)


def test_optional_file_must_be_in_its_feature_folder(series_dir: Path) -> None:
    _edit(series_dir, 'feature = "aten-rvv"', 'feature = "other"')
    with pytest.raises(UsageError, match=r"must be in the feature's folder other/"):
        load_series(series_dir)


def test_optional_entry_needs_a_feature(series_dir: Path) -> None:
    _edit(series_dir, 'feature = "aten-rvv"\n', "")
    with pytest.raises(UsageError, match=r"optional\[0\]: missing key 'feature'"):
        load_series(series_dir)


def test_default_patch_cannot_live_in_a_folder(series_dir: Path) -> None:
    text = (series_dir / "series.toml").read_text()
    entry = text[text.index("\n[[optional]]\n"):]
    default = entry.replace("[[optional]]", "[[patch]]").replace('feature = "aten-rvv"\n', "")
    (series_dir / "series.toml").write_text(text[:text.index("\n[[optional]]\n")] + default)
    with pytest.raises(UsageError, match=r"a default patch is a top-level file"):
        load_series(series_dir)


def test_unknown_table_names_optional(series_dir: Path) -> None:
    _edit(series_dir, "\n[[optional]]\n", "\n[[optionl]]\n")
    with pytest.raises(UsageError, match=r"unknown table 'optionl'") as exc:
        load_series(series_dir)
    assert exc.value.hint and "optional" in exc.value.hint


# ------------------------------------------------------------------ the --aten-rvv build flag
def test_build_plan_without_the_flag_is_unchanged() -> None:
    from rvtorch import build

    plan = build.make_plan("riscv64", provider="debian", stage="partial")
    series = series_for(torch_version())
    assert plan.features == [] and "USE_RVV" not in plan.env
    assert [p["file"] for p in plan.patches] == [p.file for p in series.for_provider("debian")]


def test_build_plan_with_aten_rvv_on() -> None:
    from rvtorch import build

    off = build.make_plan("riscv64", provider="debian", stage="partial")
    on = build.make_plan("riscv64", provider="debian", stage="partial", features=["aten-rvv"])
    assert on.features == ["aten-rvv"] and on.env["USE_RVV"] == "1"
    assert "-DUSE_RVV=1" in on.cmake
    files = [p["file"] for p in on.patches]
    assert files[: len(off.patches)] == [p["file"] for p in off.patches]
    assert all(f.startswith("aten-rvv/") for f in files[len(off.patches):])
    assert len(files) > len(off.patches)
    # Another patched tree: the running default build's tree is never touched.
    assert on.tree != off.tree
    assert on.to_json()["features"] == ["aten-rvv"]  # recorded in build-info


def test_aten_rvv_flag_on_another_arch_is_a_usage_error() -> None:
    from tests.conftest import run_cli

    r = run_cli("build", "--arch", "aarch64", "--source", "debian", "--dry-run",
                "--aten-rvv", "on")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "rvtorch: error: --aten-rvv on is for riscv64, not aarch64"]


def test_aten_rvv_is_on_by_default_for_riscv64_only() -> None:
    import json
    import subprocess
    import sys

    from rvtorch import build

    assert build.resolve_features("riscv64", {"aten-rvv": None}) == ("aten-rvv",)
    assert build.resolve_features("riscv64", {"aten-rvv": "off"}) == ()
    assert build.resolve_features("aarch64", {"aten-rvv": None}) == ()
    assert build.resolve_features("aarch64", {"aten-rvv": "on"}) == ("aten-rvv",)  # refused later

    def dry(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rvtorch", "build", "--source", "debian",
                               "--dry-run", *extra], capture_output=True, text=True, timeout=120)

    for arch, flag, want in (("riscv64", (), ["aten-rvv"]), ("riscv64", ("--aten-rvv", "off"), []),
                             ("aarch64", (), [])):
        r = dry("--arch", arch, *flag)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["features"] == want, (arch, flag)
    r = dry("--arch", "aarch64", "--aten-rvv", "on")
    assert r.returncode == 2 and "--aten-rvv on is for riscv64" in r.stderr
