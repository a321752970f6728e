"""The shared helpers of the target-side modules (src/rvtorch/validate/common.py), natively.

The plain-Python parts run everywhere; the tensor parts need torch and skip without it (torch is
not in the dev extra, see tests/unit/test_validate_reflow.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from rvtorch.validate.common import (
    EXIT_CHECK_FAILED,
    EXIT_CRASH,
    EXIT_OK,
    Result,
    base_parser,
    run_suite,
    write_json,
)

needs_torch = pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None,
    reason="torch is not installed in this venv (RVTORCH_TEST_TORCH names a pip requirement "
    "for scripts/test.sh to install); "
           "the emulated tier runs these modules in the x86 reference rootfs")


def test_a_result_without_checks_is_not_ok() -> None:
    res = Result("x", "target")
    assert not res.ok
    res.check("a", True)
    assert res.ok
    res.check("b", False, detail="why")
    assert not res.ok


def test_basis_is_recorded_only_when_given(capsys: pytest.CaptureFixture[str]) -> None:
    res = Result("reflow", "target")
    res.check("plain", True)
    res.check("trained", False, basis="target_training", detail="off")
    assert "basis" not in res.checks[0]
    assert res.checks[1]["basis"] == "target_training"
    assert "[reflow] FAIL trained: off" in capsys.readouterr().err


def test_values_become_json(tmp_path: Path) -> None:
    res = Result("x", "host")
    res.check("v", True, value=float("nan"), expected=(1, 2.5), tol={"rtol": float("inf")})
    res.figures["f"] = {1: [0.5]}
    path = tmp_path / "r.json"
    res.write(str(path))
    data = json.loads(path.read_text())
    assert data["checks"][0]["value"] == "nan" and data["checks"][0]["expected"] == [1, 2.5]
    assert data["checks"][0]["tol"] == {"rtol": "inf"} and data["figures"] == {"f": {"1": [0.5]}}
    assert "total_s" in data["timings"]


def test_write_json_leaves_no_temp_file(tmp_path: Path) -> None:
    write_json(str(tmp_path / "a.json"), {"k": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def _parser() -> argparse.ArgumentParser:
    return base_parser("t", "test suite")


@needs_torch
def test_run_suite_exit_codes_and_crash_record(tmp_path: Path) -> None:
    out = tmp_path / "o.json"
    args = ["--role", "target", "--data", str(tmp_path), "--out", str(out)]

    def good(_: argparse.Namespace, res: Result) -> None:
        res.check("fine", True)

    def bad(_: argparse.Namespace, res: Result) -> None:
        res.check("wrong", False)

    def crash(_: argparse.Namespace, res: Result) -> None:
        raise RuntimeError("boom")

    assert run_suite("t", good, _parser(), args) == EXIT_OK
    assert json.loads(out.read_text())["info"]["torch_version"]
    assert run_suite("t", bad, _parser(), args) == EXIT_CHECK_FAILED
    assert run_suite("t", crash, _parser(), args) == EXIT_CRASH
    data = json.loads(out.read_text())
    assert data["checks"][-1] == {"name": "crash", "ok": False, "value": None, "expected": None,
                                  "tol": None, "detail": "RuntimeError: boom"}
    assert "Traceback" in data["info"]["traceback"]


@needs_torch
def test_tensor_json_round_trip_every_dtype() -> None:
    import torch

    from rvtorch.validate.common import tensor_close, tensor_from_json, tensor_to_json

    base = torch.arange(-3, 4, dtype=torch.float64)
    for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8,
               torch.int16, torch.int32, torch.int64):
        t = (base * 1.5).to(dt)
        back = tensor_from_json(json.loads(json.dumps(tensor_to_json(t))))
        assert back.dtype == dt and torch.equal(back, t)
    c = torch.complex(base, -base).to(torch.complex64)
    assert torch.equal(tensor_from_json(tensor_to_json(c)), c)
    b = base > 0
    assert torch.equal(tensor_from_json(tensor_to_json(b)), b)
    u = base.abs().to(torch.uint8)
    assert torch.equal(tensor_from_json(tensor_to_json(u)), u)
    # tensor_close: shape and dtype first, then values.
    assert tensor_close(base, base + 1e-9, rtol=0, atol=1e-6)["ok"]
    assert "dtype" in tensor_close(base, base.float(), rtol=1, atol=1)["detail"]
    assert "shape" in tensor_close(base, base[:3], rtol=1, atol=1)["detail"]
    assert not tensor_close(base, base + 0.1, rtol=0, atol=1e-3)["ok"]
