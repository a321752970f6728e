"""``rvtorch bench ops``: the native timing command end to end with this venv's torch (the same
op table a board times), and its usage errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rvtorch import ops_target
from tests.conftest import run_cli


def _torch_or_skip() -> None:
    proc = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True,
                          check=False)
    if proc.returncode != 0:
        pytest.skip("this Python has no torch: the native timing needs one")


def test_native_times_every_op_in_both_capabilities(tmp_path: Path) -> None:
    _torch_or_skip()
    out = tmp_path / "ops.json"
    r = run_cli("bench", "ops", "--native", "--min-time", "0.01", "--size", "1031",
                "--json", str(out), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["processes"]["default"]["capability"] == "DEFAULT"
    assert report["processes"]["default"]["threads"] == 1
    chosen = report["meta"]["chosen_capability"]
    assert chosen == report["processes"]["chosen"]["capability"]
    keys = [ops_target.op_key(n, d) for n, d, _ in ops_target.op_table()]
    assert list(report["ops"]) == keys
    for key in keys:
        row = report["ops"][key]
        assert row["default_ns"] > 0 and row["chosen_ns"] > 0, key
        assert row["speedup"] == round(row["default_ns"] / row["chosen_ns"], 2)
    assert report["ops"]["softmax"]["shape"] == [ops_target.ROWS, ops_target.COLS]
    assert report["ops"]["add"]["shape"] == [1031]
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["op", "DEFAULT", "us", chosen, "us", "speed-up"]
    assert any(line.startswith("add_float64 ") for line in lines)
    assert "geometric mean speed-up" in r.stdout


def test_native_with_a_python_without_torch_is_a_usage_error(tmp_path: Path) -> None:
    bare = shutil.which("python3", path="/usr/bin")
    if bare is None or subprocess.run([bare, "-c", "import torch"], capture_output=True,
                                      check=False).returncode == 0:
        pytest.skip("no python3 without torch in /usr/bin to test with")
    r = run_cli("bench", "ops", "--native", "--python", bare, "--min-time", "0.01")
    assert r.returncode == 2
    assert r.stderr.startswith(f"rvtorch: error: {bare} has no torch")


@pytest.mark.parametrize("args, message", [
    ((), "counting instructions needs --wheel"),
    (("--native", "--cpu", "rvv128"), "--native times this machine's torch"),
])
def test_usage_errors(args: tuple[str, ...], message: str) -> None:
    r = run_cli("bench", "ops", *args)
    assert r.returncode == 2
    assert r.stderr.startswith(f"rvtorch: error: {message}")


def test_counting_refuses_a_model_without_v(tmp_path: Path) -> None:
    wheel = tmp_path / "torch-2.6.0-cp313-cp313-manylinux_2_39_riscv64.whl"
    wheel.write_bytes(b"not used: the model is refused first")
    r = run_cli("bench", "ops", "--wheel", str(wheel), "--cpu", "rv64")
    assert r.returncode == 2
    assert r.stderr.startswith("rvtorch: error: --cpu rv64: no V extension")
