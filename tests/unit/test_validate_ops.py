"""The op-parity suite (src/rvtorch/validate/ops.py) natively with this venv's torch: its
comparison catches a broken op, a NaN pattern and a lost -0.0; and the runner's two-process
capability comparison (rvtorch.validation.run_ops), which on x86 compares AVX2/AVX512 with
ATEN_CPU_CAPABILITY=default for real (skipped without torch, see test_validate_reflow.py)."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip(
    "torch", reason="torch is not installed in this venv (RVTORCH_TEST_TORCH names a pip "
                    "requirement for scripts/test.sh to install)")

from rvtorch import validation  # noqa: E402
from rvtorch.errors import UsageError  # noqa: E402
from rvtorch.validate import ops  # noqa: E402
from rvtorch.validate.common import Result  # noqa: E402


@pytest.fixture(scope="module")
def golden() -> dict[str, dict[str, Any]]:
    """The whole default table, computed once with this torch (stands in for the x86 golden)."""
    torch.set_num_threads(1)
    return ops.compute_table(ops.cases())


def _compare(table: list[ops.Case], golden: dict[str, dict[str, Any]]) -> Result:
    res = Result("ops", "target")
    ops.compare_tables(res, table, ops.compute_table(table), golden, prefix="golden",
                       reference_name="x86", capability=ops.cpu_capability())
    return res


def _failed(res: Result) -> list[str]:
    return [c["name"] for c in res.checks if not c["ok"]]


def test_the_table_covers_the_ops_dtypes_and_shapes() -> None:
    table = ops.cases()
    names = {c.name for c in table}
    assert len(names) == len(table)  # one check per case, no two cases alike
    for op in (*ops.UNARY, *ops.BINARY, *ops.COMPARE, "where", *ops.REDUCTIONS, "softmax",
               "log_softmax", "layer_norm", "batch_norm", "clamp"):
        assert any(c.op == op for c in table), op
    assert {c.kind for c in table} >= {"tails", "strided", "broadcast", "special", "rows",
                                       "cols"}
    casts = {(c.dtype, c.op) for c in table if c.op.startswith("to_")}
    assert len(casts) == len(ops.CAST_DTYPES) * (len(ops.CAST_DTYPES) - 1)
    assert {c.dtype for c in table} == {"float32", "float64", "int32", "int64", "bool",
                                        "bfloat16"}
    assert len(ops.cases(full=True)) > len(table)
    assert all(n % 8 and n % 4 != 0 for n in ops.TAILS if n > 1)  # no multiple of a vector


def test_inputs_are_deterministic_and_do_not_depend_on_torch_rng() -> None:
    case = next(c for c in ops.cases() if c.name == "exp/float32/tails")
    torch.manual_seed(1)
    first = ops.evaluate(case)
    torch.manual_seed(2)
    torch.rand(100)
    second = ops.evaluate(case)
    assert first == second
    assert [len(s) and s[0] for s in first["shape"]] == list(ops.TAILS)
    other = ops.evaluate(next(c for c in ops.cases() if c.name == "exp/float64/tails"))
    assert other["digest"] != first["digest"]


def test_the_same_torch_passes_its_own_golden(golden: dict[str, dict[str, Any]]) -> None:
    res = _compare(ops.cases(), golden)
    assert not _failed(res)
    c = res.checks[0]
    assert {"op", "dtype", "shape", "capability", "reference"} <= set(c)
    assert set(c["value"]) == {"max_abs_err", "max_ulp", "mismatches", "nan_inf_agree"}


def test_an_op_off_by_more_than_its_tolerance_fails(golden: dict[str, dict[str, Any]],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.exp
    # 8 ulp of float32 (TRANSCENDENTAL allows 4): a kernel a little wrong, not a crash.
    monkeypatch.setattr(torch, "exp", lambda x: real(x) * (1 + 8 * 2.0**-23))
    table = ops.select(ops.cases(), "exp/,log/float32/tails")
    res = _compare(table, golden)
    assert sorted(_failed(res)) == ["golden:exp/float32/special", "golden:exp/float32/strided",
                                    "golden:exp/float32/tails", "golden:exp/float64/special",
                                    "golden:exp/float64/strided", "golden:exp/float64/tails"]
    bad = next(c for c in res.checks if c["name"] == "golden:exp/float32/tails")
    assert bad["value"]["max_ulp"] >= 7 and bad["value"]["mismatches"] > 0
    assert "out of tolerance" in bad["detail"] and bad["tol"]["ulp"] == 4


def test_an_op_within_its_tolerance_passes(golden: dict[str, dict[str, Any]],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.exp
    # 1 ulp off: what SLEEF against the C library may differ by.
    monkeypatch.setattr(torch, "exp", lambda x: torch.nextafter(real(x), torch.full_like(
        x, math.inf)))
    res = _compare(ops.select(ops.cases(), "exp/float32/tails"), golden)
    assert not _failed(res)
    assert res.checks[0]["value"]["max_ulp"] == 1


def test_a_nan_pattern_mismatch_fails(golden: dict[str, dict[str, Any]],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # fmax ignores NaN where maximum propagates it: equal on every finite input.
    monkeypatch.setattr(torch, "maximum", torch.fmax)
    res = _compare(ops.select(ops.cases(), "maximum/float32"), golden)
    assert _failed(res) == ["golden:maximum/float32/special"]
    bad = next(c for c in res.checks if not c["ok"])
    assert bad["value"]["nan_inf_agree"] is False
    assert "nan" in bad["detail"]


def test_exact_ops_keep_the_sign_of_zero(golden: dict[str, dict[str, Any]],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.neg
    monkeypatch.setattr(torch, "neg", lambda x: real(x) + 0)  # -0.0 + 0 is +0.0
    res = _compare(ops.select(ops.cases(), "neg/float32/special"), golden)
    assert _failed(res) == ["golden:neg/float32/special"]


def test_compare_values_units() -> None:
    t = ops.Tol(2)
    base = {"dtype": "float32", "shape": [[3]], "digest": "d"}
    one = 1.0 + 2.0**-23
    assert ops.ulp_distance(1.0, one, "float32") == 1
    assert ops.ulp_distance(-1e-45, 1e-45, "float32") == 2  # across zero
    assert ops.ulp_distance(1.0, 1.0 + 2.0**-52, "float64") == 1
    assert ops.ulp_distance(1.0, 1.0078125, "bfloat16") == 1
    ok = ops.compare_values({**base, "data": [1.0, math.nan, -math.inf]},
                            {**base, "data": [one, -math.nan, -math.inf]}, t)
    assert ok["ok"] and ok["max_ulp"] == 1 and ok["nan_inf_agree"]
    rep = ops.compare_values({**base, "data": [1.0, math.inf, 0.0]},
                             {**base, "data": [1.0, math.nan, 0.0]}, t)
    assert not rep["ok"] and not rep["nan_inf_agree"] and rep["mismatches"] == 1
    rep = ops.compare_values({**base, "data": [1.0, 2.0, 3.0]},
                             {**base, "digest": "e", "data": [1.0, 2.0, 3.0]}, t)
    assert not rep["ok"] and "inputs differ" in rep["detail"]
    rep = ops.compare_values({**base, "data": [1, 2]}, {**base, "dtype": "int64", "data": [1, 2]},
                             t)
    assert not rep["ok"] and "dtype" in rep["detail"]
    ints = {"dtype": "int64", "shape": [[2]], "digest": "d"}
    rep = ops.compare_values({**ints, "data": [1, 5]}, {**ints, "data": [1, 4]}, ops.EXACT)
    assert not rep["ok"] and rep["max_abs_err"] == 1.0
    # atol rescues an element many ulps off near zero (sin at a multiple of pi).
    near = ops.compare_values({**base, "data": [1e-9, 0.0, 0.0]},
                              {**base, "data": [2e-9, 0.0, 0.0]}, ops.PERIODIC["float32"])
    assert near["ok"] and near["max_ulp"] > 4


def test_known_x86_differences_excuse_only_their_elements() -> None:
    known = ops.known_x86_differences()
    s32, s64 = ops.specials("float32"), ops.specials("float64")
    gelu_idx, _ = known["gelu/float32/special"]
    assert [s32[i] for i in gelu_idx] == [math.inf, 3.4028234663852886e38]
    pow_idx, why = known["pow/float64/special"]
    assert [(s64[i // len(s64)], s64[i % len(s64)]) for i in pow_idx] == [
        (1.7976931348623157e308, 1.0), (-1.7976931348623157e308, 1.0)]
    assert "SLEEF" in why
    base = {"dtype": "float32", "shape": [[3]], "digest": "d"}
    target = {**base, "data": [1.0, math.inf, 2.0]}
    x86 = {**base, "data": [1.0, math.nan, 2.0]}
    rep = ops.compare_values(target, x86, ops.EXACT, known=(1,))
    assert rep["ok"] and rep["known_differences"] == 1 and not rep["nan_inf_agree"]
    # The same difference at an element nobody explained fails.
    assert not ops.compare_values(target, x86, ops.EXACT, known=(2,))["ok"]
    # A value error at an excused element still fails: only the NaN/Inf pattern is excused.
    off = ops.compare_values({**base, "data": [1.0, math.nan, 2.5]}, x86, ops.EXACT,
                             known=(2,))
    assert not off["ok"]


def test_capability_names() -> None:
    assert ops.is_default("DEFAULT") and ops.is_default("NO AVX")  # torch 2.6's DEFAULT
    assert not ops.is_default("AVX512") and not ops.is_default("RVV")


def test_an_op_that_raises_fails_only_its_own_check(golden: dict[str, dict[str, Any]],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*a: Any, **k: Any) -> Any:
        raise RuntimeError("kernel missing")

    monkeypatch.setattr(torch, "atan2", broken)
    res = _compare(ops.select(ops.cases(), "atan2/float64,add/float64/tails"), golden)
    assert sorted(_failed(res)) == [f"golden:atan2/float64/{k}" for k in
                                    ("broadcast", "special", "strided", "tails")]
    assert "kernel missing" in next(c for c in res.checks if not c["ok"])["detail"]


def test_parse_suites_knows_ops_on_request_only() -> None:
    assert validation.parse_suites("smoke,ops") == ("smoke", "ops")
    assert "ops" not in validation.SUITES
    with pytest.raises(UsageError) as exc:
        validation.parse_suites("ops,opz")
    assert "\n" not in str(exc.value) and "opz" in str(exc.value)


# ---------------------------------------------------------------------------------------------
# The suite as `rvtorch validate` runs it: processes, references, the capability run


# The cases the process tests run: few, so each process is mostly its `import torch`.
ONLY = "exp/float32/tails,log_softmax/float64/rows"


def _native(env: dict[str, str] | None = None) -> validation.PyEnv:
    return validation.PyEnv(name="host", rootfs=None, python=sys.executable,
                            extra_env=env or {})


@pytest.fixture(scope="module")
def golden_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The host role's golden, made by a suite process as ensure_references makes it."""
    hdir = tmp_path_factory.mktemp("host")
    validation.copy_package(hdir)
    (hdir / "data").mkdir()
    host = validation.run_module(_native(), str(hdir), hdir, "ops",
                                 ["--role", "host", "--data", str(hdir / "data"), "--only", ONLY],
                                 cpu=None, out_name="ops_host.json", timeout=900)
    assert host.ok, host.to_json()
    return hdir / "data"


def _run_ops(tmp_path: Path, golden_dir: Path, pyenv: validation.PyEnv,
             extra: tuple[str, ...] = ()) -> validation.SuiteRun:
    """validation.run_ops in a fresh work directory holding the package and the golden."""
    hdir = tmp_path / "guest"
    validation.copy_package(hdir)
    shutil.copytree(golden_dir, hdir / "data")
    args = ["--role", "target", "--data", str(hdir / "data"), "--only", ONLY, *extra]
    return validation.run_ops(pyenv, str(hdir), hdir, args, cpu=None, timeout=900)


def test_run_ops_compares_the_chosen_capability_with_default(tmp_path: Path,
                                                             golden_dir: Path) -> None:
    if ops.is_default(ops.cpu_capability()):
        pytest.skip("this machine's torch has no CPU capability but DEFAULT")
    run = _run_ops(tmp_path, golden_dir, _native())
    assert run.ok, run.to_json()
    res = run.result
    assert res is not None
    names = [c["name"] for c in res["checks"]]
    assert names == ["golden:exp/float32/tails", "golden:log_softmax/float64/rows",
                     "capability_forced_default", "capability:exp/float32/tails",
                     "capability:log_softmax/float64/rows"]
    parity = res["info"]["capability_parity"]
    assert parity["status"] == "passed" and parity["default_capability"] == "DEFAULT"
    assert parity["chosen"] == res["info"]["cpu_capability"] != "DEFAULT"
    cap = next(c for c in res["checks"] if c["name"].startswith("capability:"))
    assert cap["capability"] == "DEFAULT" and cap["reference"].startswith(parity["chosen"])
    report = {"arch": "x86", "runs": [{"cpu": "native", "suites": {"ops": run.to_json()}}]}
    validation.summarise(report)
    assert report["verdict"] == "passed" and report["skipped_checks"] == []


def test_a_default_only_torch_reports_the_capability_check_skipped(tmp_path: Path,
                                                                   golden_dir: Path) -> None:
    # ATEN_CPU_CAPABILITY=default in the suite's own environment: DEFAULT is all there is.
    env = _native({"ATEN_CPU_CAPABILITY": "default"})
    run = _run_ops(tmp_path, golden_dir, env)
    assert run.ok and run.status == validation.PASSED
    res = run.result
    assert res is not None
    assert [c["name"] for c in res["checks"]] == ["golden:exp/float32/tails",
                                                  "golden:log_softmax/float64/rows"]
    assert res["info"]["capability_parity"]["status"] == "skipped"
    report = {"arch": "x86", "runs": [{"cpu": "native", "suites": {"ops": run.to_json()}}]}
    validation.summarise(report)
    # Not a pass of that check (listed as skipped), not a failure of the run.
    assert report["verdict"] == "passed"
    assert len(report["skipped_checks"]) == 1
    assert report["skipped_checks"][0].startswith(
        "x86/native/ops: capability_parity: skipped: torch chose ")


def test_a_requested_capability_comparison_that_cannot_run_fails(tmp_path: Path,
                                                                 golden_dir: Path) -> None:
    env = _native({"ATEN_CPU_CAPABILITY": "default"})
    run = _run_ops(tmp_path, golden_dir, env, ("--require-capability-parity",))
    assert run.status == validation.FAILED
    assert run.result is not None
    assert [c["name"] for c in run.result["checks"] if not c["ok"]] == ["capability_parity"]


def test_a_broken_default_run_fails_the_suite(tmp_path: Path) -> None:
    main = validation.SuiteRun(suite="ops", exit=0, wall_s=1.0, result={
        "ok": True, "checks": [{"name": "golden:x", "ok": True}],
        "info": {"cpu_capability": "RVV"}})
    default = validation.SuiteRun(suite="ops", exit=1, wall_s=2.0, result={
        "ok": False, "checks": [{"name": "capability:x", "ok": False, "detail": "3 elements"}],
        "info": {"cpu_capability": "DEFAULT"}})
    run = validation.merge_capability_run(main, default)
    assert run.status == validation.FAILED and run.wall_s == 3.0
    report = {"arch": "riscv64", "runs": [{"cpu": "rvv128", "suites": {"ops": run.to_json()}}]}
    validation.summarise(report)
    assert report["failures"] == ["riscv64/rvv128/ops: capability:x (3 elements)"]
    killed = validation.SuiteRun(suite="ops", exit=None, wall_s=5.0, result=None,
                                 problem="ops did not finish within 9 s (killed)")
    main2 = validation.SuiteRun(suite="ops", exit=0, wall_s=1.0, result={
        "ok": True, "checks": [], "info": {"cpu_capability": "RVV"}})
    run2 = validation.merge_capability_run(main2, killed)
    assert run2.status == validation.FAILED and "DEFAULT run: ops did not finish" in run2.problem


def test_the_golden_is_json_a_person_can_read(tmp_path: Path) -> None:
    assert ops.main(["--role", "host", "--data", str(tmp_path), "--out",
                     str(tmp_path / "r.json"), "--only", "to_bfloat16/float32/special"]) == 0
    g = json.loads((tmp_path / ops.GOLDEN).read_text())
    entry = g["cases"]["to_bfloat16/float32/special"]
    assert entry["dtype"] == "bfloat16" and math.isnan(entry["data"][0])
    assert entry["data"][1] == math.inf and math.copysign(1.0, entry["data"][4]) == -1.0
    assert ops.main(["--role", "target", "--data", str(tmp_path), "--out",
                     str(tmp_path / "t.json"), "--only", "nothing-like-this"]) == 1


def test_a_wheel_with_the_rvv_capability_must_choose_it_on_vector_models() -> None:
    t = validation.matrix().target("riscv64")
    opts = validation.Options(arch="riscv64", cpus=(), suites=("smoke", "ops"),
                              report=Path("."), aten_rvv=True)
    for model in t.cpu:
        smoke = validation.target_args("smoke", opts, model, "/g", {}, None)
        want = "RVV" if model.vector else "DEFAULT"
        assert smoke[smoke.index("--expect-cpu-capability") + 1] == want
        ops_args = validation.target_args("ops", opts, model, "/g", {}, None)
        assert ("--require-capability-parity" in ops_args) == model.vector
    plain = validation.Options(arch="riscv64", cpus=(), suites=("smoke",), report=Path("."))
    assert "--expect-cpu-capability" not in validation.target_args(
        "smoke", plain, t.cpu[1], "/g", {}, None)
    assert validation.suites_for(True) == (*validation.SUITES, "ops")
    assert validation.suites_for(False) == validation.SUITES


def test_validate_reads_the_capability_from_the_build_info(tmp_path: Path) -> None:
    from rvtorch.commands.validate import wheel_has_aten_rvv

    wheel = tmp_path / "torch-2.6.0-cp313-cp313-manylinux_2_39_riscv64.whl"
    wheel.write_bytes(b"")
    assert not wheel_has_aten_rvv(wheel, "auto")  # no build-info: off
    info = tmp_path / f"{wheel.name}.build-info.json"
    info.write_text(json.dumps({"plan": {"features": ["aten-rvv"]}}))
    assert wheel_has_aten_rvv(wheel, "auto")
    assert not wheel_has_aten_rvv(wheel, "off")
    info.write_text(json.dumps({"plan": {"features": []}}))
    assert not wheel_has_aten_rvv(wheel, "auto") and wheel_has_aten_rvv(wheel, "on")
    info.write_text("{not json")
    with pytest.raises(UsageError):
        wheel_has_aten_rvv(wheel, "auto")
    with pytest.raises(UsageError):
        wheel_has_aten_rvv(None, "on")


def test_the_vector_models_of_an_rvv_wheel_run_under_qemu_10(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    """Debian 12's qemu-user 7.2 aborts on RVV code GCC 14 emits and has no riscv_hwprobe: a
    wheel with the RVV capability runs on the vector models under the QEMU 10 of tcg_count,
    explicitly (qemu -L), and every other validation keeps the host's QEMU."""
    from rvtorch import emulate, tcg_count

    fake = tmp_path / "qemu-riscv64"
    fake.write_text("#!/bin/sh\necho 'qemu-riscv64 version 10.0.13'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(tcg_count, "ensure_qemu",
                        lambda **_: (fake, {"debian_version": "1:10.0.13+ds-0+deb13u1"}))
    models = validation.cpu_models("riscv64", ())
    rvv = validation.Options(arch="riscv64", cpus=(), suites=("smoke",), report=tmp_path,
                             aten_rvv=True)
    got = validation.vector_qemu(rvv, models)
    assert got is not None and got["binary"] == str(fake) and "10.0.13" in got["version"]
    plain = validation.Options(arch="riscv64", cpus=(), suites=("smoke",), report=tmp_path)
    assert validation.vector_qemu(plain, models) is None
    scalar_only = [m for m in models if not m.vector]
    assert validation.vector_qemu(rvv, scalar_only) is None
    t = validation.matrix().target("riscv64")
    monkeypatch.setattr(emulate.shutil, "which", lambda name: f"/usr/bin/{name}")
    before = emulate.qemu_binary(t)
    with emulate.qemu_override("riscv64", fake):
        assert emulate.qemu_binary(t) == str(fake)
        with emulate.qemu_override("riscv64", None):
            assert emulate.qemu_binary(t) == before
        assert emulate.qemu_binary(t) == str(fake)
    assert emulate.qemu_binary(t) == before
    monkeypatch.delenv(emulate.MODE_ENV, raising=False)
    with emulate.explicit_mode():
        assert os.environ[emulate.MODE_ENV] == "qemu"
    assert emulate.MODE_ENV not in os.environ
