from __future__ import annotations

import json
import tomllib

import pytest

from rvtorch.errors import UsageError
from rvtorch.targets import load_matrix, parse_matrix
from tests.conftest import ROOT, run_cli


def raw() -> dict:
    with (ROOT / "toolchains" / "targets.toml").open("rb") as fh:
        return tomllib.load(fh)


def test_matrix_has_both_targets_with_scalar_and_vector_models() -> None:
    m = load_matrix()
    assert set(m.arches) == {"riscv64", "aarch64"}
    rv = m.target("riscv64")
    assert rv.march == "rv64gc" and rv.mabi == "lp64d"
    assert rv.scalar_models and len(rv.vector_models) >= 2
    assert {c.qemu_cpu for c in rv.vector_models} >= {
        "rv64,v=true,vext_spec=v1.0,vlen=128",
        "rv64,v=true,vext_spec=v1.0,vlen=256",
    }
    assert len(m.target("aarch64").cpu) >= 2


def test_unknown_arch_suggests() -> None:
    with pytest.raises(UsageError) as exc:
        load_matrix().target("riscv46")
    assert "did you mean 'riscv64'" in exc.value.one_line()


def test_unknown_cpu_model_suggests() -> None:
    with pytest.raises(UsageError) as exc:
        load_matrix().target("riscv64").cpu_model("rvv512")
    assert "did you mean" in exc.value.one_line()


def test_cpu_model_by_qemu_string() -> None:
    t = load_matrix().target("riscv64")
    assert t.cpu_model("rv64,v=true,vext_spec=v1.0,vlen=256").name == "rvv256"


def test_unknown_key_is_rejected_with_hint() -> None:
    data = raw()
    data["target"]["riscv64"]["tripel"] = data["target"]["riscv64"].pop("triple")
    with pytest.raises(UsageError) as exc:
        parse_matrix(data)
    assert "did you mean 'triple'" in exc.value.one_line()


def test_wrong_type_is_rejected() -> None:
    data = raw()
    data["target"]["riscv64"]["cpu"][0]["vector"] = "no"
    with pytest.raises(UsageError, match="true/false"):
        parse_matrix(data)


def test_target_without_scalar_model_is_rejected() -> None:
    data = raw()
    data["target"]["riscv64"]["cpu"] = [c for c in data["target"]["riscv64"]["cpu"] if c["vector"]]
    with pytest.raises(UsageError, match="without the vector"):
        parse_matrix(data)


def test_matrix_is_frozen() -> None:
    t = load_matrix().target("riscv64")
    with pytest.raises(AttributeError):
        t.triple = "x"  # type: ignore[misc]


def test_cli_targets_json_round_trips() -> None:
    proc = run_cli("targets", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["targets"]["riscv64"]["qemu_binary"] == "qemu-riscv64-static"


def test_cli_unknown_subcommand_is_usage_error() -> None:
    proc = run_cli("frobnicate")
    assert proc.returncode == 2
