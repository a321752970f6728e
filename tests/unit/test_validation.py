"""Unit tests of the validation layer's host side and its torch-free logic (no QEMU, no torch)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from rvtorch.errors import UsageError, ValidationError
from rvtorch.report import parity_rows, write_report
from rvtorch.validate.common import close_report, compare_entry
from rvtorch.validation import (
    Options,
    SuiteRun,
    apply_injections,
    openblas_verbose,
    parse_inject,
    parse_suites,
    raise_for_verdict,
    summarise,
)
from tests.conftest import run_cli


def entry(data: list[float], dtype: str = "float32") -> dict[str, Any]:
    return {"dtype": dtype, "shape": [len(data)], "data": data}


def test_close_report_within_and_outside_tolerance() -> None:
    ok = close_report([1.0, 2.0, -3.0], [1.0, 2.0 + 1e-6, -3.0], rtol=1e-5, atol=0.0)
    assert ok["ok"] and ok["max_abs_err"] == pytest.approx(1e-6)
    bad = close_report([1.0, 2.1, -3.0], [1.0, 2.0, -3.0], rtol=1e-3, atol=1e-3)
    assert not bad["ok"] and bad["worst_index"] == 1
    assert bad["max_abs_err"] == pytest.approx(0.1)


def test_close_report_nan_inf_and_length() -> None:
    assert close_report([math.nan], [math.nan], rtol=0, atol=0)["ok"]
    assert not close_report([1.0], [math.nan], rtol=1, atol=1)["ok"]
    assert close_report([math.inf], [math.inf], rtol=0, atol=0)["ok"]
    assert not close_report([-math.inf], [math.inf], rtol=1, atol=1)["ok"]
    assert not close_report([1.0], [1.0, 2.0], rtol=1, atol=1)["ok"]


def test_compare_entry_catches_a_wrong_golden_value() -> None:
    golden = entry([0.5, 1.25, -2.0])
    assert compare_entry(entry([0.5, 1.25, -2.0]), golden, rtol=1e-4, atol=1e-4)["ok"]
    wrong = json.loads(json.dumps(golden))
    wrong["data"][2] += 0.5  # a deliberately wrong golden
    rep = compare_entry(entry([0.5, 1.25, -2.0]), wrong, rtol=1e-4, atol=1e-4)
    assert not rep["ok"] and rep["worst_index"] == 2


def test_compare_entry_dtype_and_shape_must_match() -> None:
    assert not compare_entry(entry([1.0], "float64"), entry([1.0]), rtol=1, atol=1)["ok"]
    other = entry([1.0, 2.0])
    other["shape"] = [2, 1]
    assert not compare_entry(entry([1.0, 2.0]), other, rtol=1, atol=1)["ok"]


def test_parse_suites_and_faults() -> None:
    assert parse_suites("smoke, fl,smoke") == ("smoke", "fl")
    with pytest.raises(UsageError) as exc:
        parse_suites("reflw")
    assert "did you mean 'reflow'" in exc.value.one_line()
    with pytest.raises(UsageError):
        parse_suites(",")
    with pytest.raises(UsageError):
        parse_inject(["explode"])


def test_openblas_verbose_line() -> None:
    assert openblas_verbose("x\nCore: riscv64_zvl128b\n") == "riscv64_zvl128b"
    assert openblas_verbose("no kernel line") is None


def test_injections_break_the_references(tmp_path: Path) -> None:
    golden = {"ops": {"matmul_f32": {"output": entry([1.0, 2.0])}}}
    (tmp_path / "smoke_golden.json").write_text(json.dumps(golden))
    (tmp_path / "reflow_8gaussians_teacher.pt").write_bytes(b"teacher")
    (tmp_path / "reflow_8gaussians_student.pt").write_bytes(b"student")
    opts = Options(arch="riscv64", cpus=(), suites=("smoke",), report=tmp_path / "r",
                   inject=("wrong-golden", "wrong-weights"))
    apply_injections(opts, tmp_path)
    data = json.loads((tmp_path / "smoke_golden.json").read_text())
    assert data["ops"]["matmul_f32"]["output"]["data"] == [1.5, 2.0]
    assert (tmp_path / "reflow_8gaussians_student.pt").read_bytes() == b"teacher"


def _check(name: str, ok: bool, **kw: Any) -> dict[str, Any]:
    return {"name": name, "ok": ok, "value": kw.get("value"), "expected": kw.get("expected"),
            "tol": kw.get("tol"), "detail": kw.get("detail", "")}


def fake_report(fail: bool = False) -> dict[str, Any]:
    pts = [[math.cos(i / 10), math.sin(i / 10)] for i in range(60)]
    ds = {"teacher": {"straightness": 1.3, "sw_euler1": 1.2, "sw_euler2": 0.4,
                      "sw_heun9_uniform": 0.2},
          "student": {"straightness": 0.01, "sw_euler1": 0.2, "sw_euler2": 0.2,
                      "sw_heun9_uniform": 0.2},
          "samples": {"data": pts, **{f"{w}_{k}": pts for w in ("teacher", "student")
                                      for k in ("euler1", "euler2", "heun9_uniform")}}}
    reflow = {"ok": not fail, "checks": [_check("8gaussians:straightness_drop", not fail,
                                                value=130.0, expected="> 20")],
              "figures": {"8gaussians": ds, "effects": {"8gaussians": {
                  "straightness_drop": 130.0, "one_step_error_drop": 6.0}}}, "info": {}}
    fl = {"ok": True, "checks": [_check("master-worker:accuracy_matches_host", True, value=0.0,
                                        tol=0.02)],
          "figures": {"fl": {"master-worker": {"accuracy": [0.5, 0.8, 0.93]},
                             "peer-to-peer": {"accuracy": [0.5, 0.8, 0.93]}}}, "info": {}}
    smoke = {"ok": True, "checks": [_check("op:matmul_f32", True,
                                           value={"max_abs_err": 1e-6, "max_rel_err": 1e-7},
                                           tol={"rtol": 1e-4, "atol": 1e-4})],
             "info": {"blas": {"corename": "riscv64_generic"}, "config_show": "built with"}}

    def suite(name: str, res: dict[str, Any]) -> dict[str, Any]:
        return {"suite": name, "status": "passed" if res["ok"] else "failed", "skip_reason": "",
                "exit": 0, "wall_s": 12.5, "ok": res["ok"], "problem": "",
                "stderr_tail": "", "result": res}

    return {"arch": "riscv64", "created": "now", "target": {"torch_source": "rootfs"},
            "qemu": {"version": "7.2", "mode": "qemu"}, "wall_s": 99.0,
            "host": {"results": {"reflow": reflow, "fl": fl}, "timings_s": {"smoke": 3.0}},
            "runs": [{"cpu": "rv64", "qemu_cpu": "rv64", "vector": False,
                      "suites": {"smoke": suite("smoke", smoke),
                                 "reflow": suite("reflow", reflow), "fl": suite("fl", fl)}}],
            "vector_scan": {"libraries": {"libopenblas.so": {"instructions": 10, "vector": 3}}}}


def test_summarise_counts_failures() -> None:
    good = fake_report()
    summarise(good)
    assert good["ok"] and good["checks_total"] == 3 and not good["failures"]
    bad = fake_report(fail=True)
    summarise(bad)
    assert not bad["ok"]
    assert bad["failures"] == ["riscv64/rv64/reflow: 8gaussians:straightness_drop"]


def test_summarise_reports_a_suite_problem() -> None:
    rep = fake_report()
    rep["runs"][0]["suites"]["fl"]["problem"] = "rank 1: killed by signal 9"
    summarise(rep)
    assert not rep["ok"] and "rank 1: killed by signal 9" in rep["failures"][0]


def test_write_report(tmp_path: Path) -> None:
    rep = fake_report()
    summarise(rep)
    out = write_report(rep, tmp_path / "rep")
    assert json.loads((out / "report.json").read_text())["ok"] is True
    page = (out / "report.html").read_text()
    assert "PASS" in page and "op:matmul_f32" in page and "riscv64_generic" in page
    for png in ("reflow_samples_8gaussians.png", "straightness_8gaussians.png",
                "fl_accuracy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png in page
    # Rewriting replaces the directory atomically, no leftovers next to it.
    write_report(rep, tmp_path / "rep")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_parity_rows_list_compared_figures() -> None:
    rows = parity_rows(fake_report())
    names = {r["name"] for r in rows}
    assert "op:matmul_f32" in names and "master-worker:accuracy_matches_host" in names


@pytest.mark.parametrize("args", [
    ["validate", "--arch", "sparc", "--rootfs-torch", "--report", "r"],
    ["validate", "--arch", "riscv64", "--rootfs-torch", "--suite", "bogus", "--report", "r"],
    ["validate", "--arch", "riscv64", "--rootfs-torch", "--cpu", "pentium", "--report", "r"],
    ["validate", "--arch", "riscv64", "--wheel", "/nonexistent/torch.whl", "--report", "r"],
    ["validate", "--arch", "riscv64", "--report", "r"],
    ["validate", "--arch", "riscv64", "--rootfs-torch", "--fl-ranks", "2", "--report", "r"],
])
def test_bad_usage_exits_2(args: list[str], tmp_path: Path) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("rvtorch") and "error:" in last  # one clear line at the end


def test_validation_error_is_exit_5() -> None:
    assert ValidationError("x").exit_code == 5


def test_a_skipped_suite_is_never_a_pass() -> None:
    """A suite that says it could not run (top-level "skipped" in its result, even with
    ok=True and passing checks) or that the runner skipped is reported skipped, not passed."""
    run = SuiteRun(suite="fastflow-fl", exit=0, wall_s=1.0,
                   result={"ok": True, "skipped": "FastFlow's source is not available",
                           "checks": [_check("core:accuracy", True)]})
    assert run.status == "skipped" and not run.ok
    assert run.to_json()["skip_reason"] == "FastFlow's source is not available"
    assert SuiteRun(suite="x", exit=None, wall_s=0, result=None, skipped="no QEMU").status \
        == "skipped"
    # A problem wins over a skip: a crash is a failure.
    assert SuiteRun(suite="x", exit=1, wall_s=0, result=None, skipped="s",
                    problem="crashed").status == "failed"

    rep = fake_report()
    rep["runs"][0]["suites"]["fl"] = run.to_json()
    summarise(rep)
    assert rep["verdict"] == "skipped" and not rep["ok"] and not rep["failures"]
    assert rep["skipped"] == ["riscv64/rv64/fl: skipped: FastFlow's source is not available"]
    with pytest.raises(UsageError, match="could not run") as exc:
        raise_for_verdict(rep, Path("r"))
    assert exc.value.exit_code == 2
    # With a failure too, the failure decides: exit 5.
    rep["runs"][0]["suites"]["reflow"]["result"]["checks"][0]["ok"] = False
    summarise(rep)
    assert rep["verdict"] == "failed"
    with pytest.raises(ValidationError):
        raise_for_verdict(rep, Path("r"))


def test_no_check_at_all_is_not_a_pass() -> None:
    rep = fake_report()
    for s in rep["runs"][0]["suites"].values():
        s["result"]["checks"] = []
    summarise(rep)
    assert rep["verdict"] == "skipped" and not rep["ok"]


def test_the_html_report_shows_skips_in_their_own_colour(tmp_path: Path) -> None:
    rep = fake_report()
    rep["runs"][0]["suites"]["fl"].update(status="skipped", skip_reason="no FastFlow", ok=False)
    summarise(rep)
    page = (write_report(rep, tmp_path / "rep") / "report.html").read_text()
    assert ".skip{background:" in page
    assert "<td class=\"skip\">SKIPPED (no FastFlow)</td>" in page
    assert "INCOMPLETE: SKIPPED" in page and "PASS<" not in page
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["verdict"] == "skipped"


# --------------------------------------------------------------------------- build: publish gate
def _gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report: dict[str, Any] | None,
          **kw: Any) -> tuple[Path, Path, Path, list[Options]]:
    """validate_and_publish with the validation run replaced by a recorded report (the real
    run is tests/emulated/test_validate.py); returns (wheel, dist, rejected, calls)."""
    from rvtorch import validation

    calls: list[Options] = []

    def fake_validate(opts: Options) -> dict[str, Any]:
        calls.append(opts)
        assert report is not None
        summarise(report)
        write_report(report, opts.report)
        return report

    monkeypatch.setattr(validation, "validate", fake_validate)
    wheel = tmp_path / "repaired" / "torch-2.6.0+riscv64-cp313-cp313-manylinux_2_39_riscv64.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    dist, rejected = tmp_path / "dist", tmp_path / "tree" / "build" / "rejected"
    dist.mkdir()
    (dist / "older.whl").write_bytes(b"x")
    return wheel, dist, rejected, calls


def test_a_passing_wheel_is_published_with_its_report(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from rvtorch import build

    wheel, dist, rejected, calls = _gate(tmp_path, monkeypatch, fake_report())
    res = build.validate_and_publish(wheel, "riscv64", dist, rejected, {"steps": {}})
    (opts,) = calls
    # The same validation as `rvtorch validate --wheel`: default suites, every CPU model.
    assert opts.wheel == wheel and opts.suites == ("smoke", "reflow", "fl") and opts.cpus == ()
    name = wheel.name
    assert sorted(p.name for p in dist.iterdir()) == sorted(
        ["older.whl", name, f"{name}.sha256", f"{name}.build-info.json", f"{name}.validation"])
    assert (dist / f"{name}.validation" / "report.html").exists()
    info = json.loads((dist / f"{name}.build-info.json").read_text())
    assert info["validation"]["status"] == "passed"
    assert info["validation"]["suites"] == {"rv64": {"smoke": "passed", "reflow": "passed",
                                                     "fl": "passed"}}
    assert res["validation_report"] == str(dist / f"{name}.validation" / "report.json")
    assert not rejected.exists() or not any(rejected.iterdir())
    # A second publish of the same name replaces the report directory whole.
    build.validate_and_publish(wheel, "riscv64", dist, rejected, {"steps": {}})
    assert not [p for p in dist.iterdir() if p.name.startswith(".")]


def test_a_wheel_with_the_rvv_capability_is_validated_with_the_ops_suite(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rvtorch import build

    wheel, dist, rejected, calls = _gate(tmp_path, monkeypatch, fake_report())
    build.validate_and_publish(wheel, "riscv64", dist, rejected,
                               {"steps": {}, "plan": {"features": ["aten-rvv"]}})
    build.validate_and_publish(wheel, "riscv64", dist, rejected,
                               {"steps": {}, "plan": {"features": []}})
    rvv, plain = calls
    assert rvv.aten_rvv and rvv.suites == ("smoke", "reflow", "fl", "ops")
    assert not plain.aten_rvv and plain.suites == ("smoke", "reflow", "fl")


def test_a_failing_wheel_is_rejected_exit_5_and_dist_is_unchanged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rvtorch import build

    wheel, dist, rejected, _ = _gate(tmp_path, monkeypatch, fake_report(fail=True))
    before = sorted(p.name for p in dist.iterdir())
    with pytest.raises(ValidationError, match="check\\(s\\) failed") as exc:
        build.validate_and_publish(wheel, "riscv64", dist, rejected, {"steps": {}})
    assert exc.value.exit_code == 5
    assert sorted(p.name for p in dist.iterdir()) == before
    name = wheel.name
    assert sorted(p.name for p in rejected.iterdir()) == sorted(
        [name, f"{name}.validation", f"{name}.build-info.json"])
    info = json.loads((rejected / f"{name}.build-info.json").read_text())
    assert info["validation"]["status"] == "failed"
    assert (rejected / f"{name}.validation" / "report.json").exists()
    assert [p.name for p in rejected.parent.iterdir()] == ["rejected"]  # no temp dirs left


def test_a_wheel_whose_suite_was_skipped_is_not_published(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rvtorch import build

    rep = fake_report()
    rep["runs"][0]["suites"]["fl"].update(status="skipped", skip_reason="no ranks", ok=False)
    wheel, dist, rejected, _ = _gate(tmp_path, monkeypatch, rep)
    with pytest.raises(UsageError, match="could not run"):
        build.validate_and_publish(wheel, "riscv64", dist, rejected, {"steps": {}})
    assert sorted(p.name for p in dist.iterdir()) == ["older.whl"]
    assert (rejected / wheel.name).exists()


def test_no_validate_publishes_with_a_warning_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rvtorch import build

    wheel, dist, rejected, calls = _gate(tmp_path, monkeypatch, None)
    build.validate_and_publish(wheel, "riscv64", dist, rejected, {"steps": {}}, validate=False)
    assert calls == []
    assert "warning: --no-validate" in capsys.readouterr().err
    info = json.loads((dist / f"{wheel.name}.build-info.json").read_text())
    assert info["validation"] == {"status": "not run", "reason": "--no-validate"}
    assert not (dist / f"{wheel.name}.validation").exists()
