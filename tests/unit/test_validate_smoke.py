"""The smoke suite's own functions (src/rvtorch/validate/smoke.py), natively with this venv's
torch (skipped without it: torch is not in the dev extra, see test_validate_reflow.py)."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip(
    "torch", reason="torch is not installed in this venv (RVTORCH_TEST_TORCH names a pip "
                    "requirement for scripts/test.sh to install)")

from rvtorch.validate import smoke  # noqa: E402


def test_torch_c_extension_of_the_real_torch() -> None:
    ext = smoke.torch_c_extension(torch)
    assert ext["ok"], ext["detail"]
    assert ext["file"] == torch._C.__file__


def _fake_torch(pkg: Path, c_file: str) -> Any:
    """A module-shaped object laid out like a broken install (files on disk, nothing imported)."""
    (pkg / "torch").mkdir(parents=True, exist_ok=True)
    (pkg / "torch" / "__init__.py").write_text("")
    return types.SimpleNamespace(__file__=str(pkg / "torch" / "__init__.py"),
                                 _C=types.SimpleNamespace(__file__=c_file))


def test_torch_c_extension_fails_for_a_foreign_or_misplaced_core(tmp_path: Path) -> None:
    import sysconfig

    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    good = _fake_torch(tmp_path / "a", str(tmp_path / "a" / "torch" / f"_C{suffix}"))
    assert smoke.torch_c_extension(good)["ok"]
    # The venv's torch Python files over another installation's compiled core.
    elsewhere = _fake_torch(tmp_path / "b", str(tmp_path / "system" / "torch" / f"_C{suffix}"))
    rep = smoke.torch_c_extension(elsewhere)
    assert not rep["ok"] and "not" in rep["detail"]
    # A core built for another interpreter (a cp311 wheel on cp313).
    other = _fake_torch(tmp_path / "c",
                        str(tmp_path / "c" / "torch" / "_C.cpython-27-riscv64-linux-gnu.so"))
    rep = smoke.torch_c_extension(other)
    assert not rep["ok"] and "this Python loads" in rep["detail"]


def test_build_info_parses_the_build_flags() -> None:
    info = smoke.build_info()
    assert info["build_flags"].get("TORCH_VERSION", "").startswith(
        torch.__version__.split("+")[0])
    assert "CXX_FLAGS" not in info["build_flags"]
    assert isinstance(info["num_threads"], int)


def test_norm_core() -> None:
    assert smoke._norm_core("riscv64_zvl128b") == smoke._norm_core("RISCV64_ZVL128B")
    assert smoke._norm_core("Haswell") != smoke._norm_core("RISCV64_GENERIC")


def test_every_op_has_a_tolerance_and_inputs() -> None:
    ops = smoke._ops()
    ins = smoke._make_inputs()
    assert set(ins) == set(ops) == set(smoke.TOL) - {"rng_randn"}


def _run(tmp: Path, *args: str) -> tuple[int, dict[str, Any]]:
    out = tmp / "out.json"
    code = smoke.main([*args, "--data", str(tmp), "--out", str(out)])
    return code, json.loads(out.read_text())


def test_host_goldens_then_target_compare_and_a_wrong_golden_fails(tmp_path: Path) -> None:
    code, host = _run(tmp_path, "--role", "host")
    assert code == 0, [c for c in host["checks"] if not c["ok"]]
    code, tgt = _run(tmp_path, "--role", "target", "--require-distributed")
    names = {c["name"] for c in tgt["checks"]}
    assert code == 0 and tgt["ok"], [c for c in tgt["checks"] if not c["ok"]]
    assert {"torch_c_extension", "rng_randn", "op:matmul_f32", "autograd_gradcheck",
            "serialization_roundtrip", "distributed_gloo"} <= names
    assert "import" not in names  # the old check that could not fail is gone
    golden = json.loads((tmp_path / "smoke_golden.json").read_text())
    golden["ops"]["softmax"]["output"]["data"][3] += 1e-3
    (tmp_path / "smoke_golden.json").write_text(json.dumps(golden))
    code, bad = _run(tmp_path, "--role", "target")
    assert code == 1
    assert [c["name"] for c in bad["checks"] if not c["ok"]] == ["op:softmax"]


def test_a_wrong_version_or_blas_core_fails(tmp_path: Path) -> None:
    _run(tmp_path, "--role", "host")
    code, tgt = _run(tmp_path, "--role", "target", "--expect-version", "0.0.1",
                     "--expect-blas-core", "RISCV64_ZVL256B",
                     "--expect-torch-prefix", str(tmp_path))
    failed = {c["name"] for c in tgt["checks"] if not c["ok"]}
    assert code == 1 and failed == {"version", "blas_kernel", "torch_location"}


def test_the_expected_cpu_capability_is_a_check(tmp_path: Path) -> None:
    import torch

    _run(tmp_path, "--role", "host")
    code, bad = _run(tmp_path, "--role", "target", "--expect-cpu-capability", "RVV")
    check = next(c for c in bad["checks"] if c["name"] == "cpu_capability")
    assert code == 1 and not check["ok"] and check["expected"] == "RVV"
    chosen = torch.backends.cpu.get_cpu_capability()
    code, good = _run(tmp_path, "--role", "target", "--expect-cpu-capability", chosen)
    assert code == 0 and any(c["name"] == "cpu_capability" and c["ok"] for c in good["checks"])
