"""Reading the counting plugin's output (rvtorch.tcg_count) and turning it into per-op counts,
and the capability check that refuses a DEFAULT-vs-DEFAULT "comparison" (rvtorch.ops_bench)."""

from __future__ import annotations

import pytest

from rvtorch import ops_bench, ops_target
from rvtorch.errors import ValidationError
from rvtorch.tcg_count import MARKER_NR, Trace, parse_output, region

GOOD = """insn_count 1 nr=21078
mark 1 0 100 0 100 0
mark 2 0 1100 0 1000 0
mark 3 0 5000 700 4800 700
exit 6000 700
"""


def test_parse_reads_marks_and_exit() -> None:
    t = parse_output(GOOD)
    assert t.nr == MARKER_NR
    assert [m.tag for m in t.marks] == [1, 2, 3]
    assert t.mark(3).vector == 700 and t.mark(2).vcpu_insns == 1000
    assert t.exit == (6000, 700)
    r = region(t, 2, 3)
    assert (r.insns, r.vector) == (3900, 700)


def test_parse_without_exit_line_is_a_trace_without_exit() -> None:
    # QEMU killed before its atexit callback: the marks still count, the exit is unknown.
    assert parse_output("\n".join(GOOD.splitlines()[:3])).exit is None


@pytest.mark.parametrize("text, message", [
    ("", "not an insn_count 1 file"),
    ("mark 1 0 1 0 1 0\n", "not an insn_count 1 file"),
    ("insn_count 1 nr=x\n", "bad header"),
    ("insn_count 1 nr=21078\nmark 1 0 100 0\n", "line 2 malformed"),
    ("insn_count 1 nr=21078\nmark 1 0 100 zero 100 0\n", "line 2 malformed"),
    ("insn_count 1 nr=21078\nsomething else\n", "line 2 malformed"),
    ("insn_count 1 nr=21078\nmark 1 0 500 0 500 0\nmark 2 0 400 0 400 0\n", "went backwards"),
])
def test_parse_rejects_malformed_output(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_output(text)


def test_a_marker_seen_twice_or_never_is_an_error() -> None:
    t = parse_output("insn_count 1 nr=21078\nmark 1 0 1 0 1 0\nmark 1 0 2 0 2 0\n")
    with pytest.raises(ValidationError, match="marker 1 seen 2 times"):
        t.mark(1)
    with pytest.raises(ValidationError, match="marker 9 seen 0 times"):
        region(parse_output(GOOD), 1, 9)


# ------------------------------------------------------------------- capability decisions
def test_rvv_expected_but_default_chosen_fails() -> None:
    with pytest.raises(ValidationError, match=r"rvv256 with ATEN_CPU_CAPABILITY unset torch runs "
                       r"capability 'DEFAULT', expected 'RVV'.*--expect-rvv no"):
        ops_bench.check_capability("rvv256", "chosen", "DEFAULT", expect_rvv=True)


def test_forced_default_must_be_default() -> None:
    with pytest.raises(ValidationError, match="ATEN_CPU_CAPABILITY=default torch runs "
                       "capability 'RVV'"):
        ops_bench.check_capability("rvv128", "default", "RVV", expect_rvv=True)


def test_torch_26_no_avx_is_default_not_rvv() -> None:
    # torch 2.6 without the RVV capability says "NO AVX" for DEFAULT: still no RVV.
    with pytest.raises(ValidationError, match="capability 'NO AVX', expected 'RVV'"):
        ops_bench.check_capability("rvv128", "chosen", "NO AVX", expect_rvv=True)


def test_trial_run_refuses_an_unexpected_rvv() -> None:
    with pytest.raises(ValidationError, match="expected 'DEFAULT'"):
        ops_bench.check_capability("rvv128", "chosen", "RVV", expect_rvv=False)


@pytest.mark.parametrize("cap, got, expect", [
    ("default", "DEFAULT", True), ("chosen", "RVV", True), ("default", "DEFAULT", False),
    ("chosen", "DEFAULT", False), ("default", "NO AVX", True), ("chosen", "NO AVX", False)])
def test_expected_capabilities_pass(cap: str, got: str, expect: bool) -> None:
    ops_bench.check_capability("rvv128", cap, got, expect_rvv=expect)


# ---------------------------------------------------------------------- per-op arithmetic
def _trace(marks: list[tuple[int, int, int]]) -> Trace:
    lines = ["insn_count 1 nr=21078"] + [f"mark {t} 0 {i} {v} {i} {v}" for t, i, v in marks]
    return parse_output("\n".join(lines) + "\n")


def _process(call: int, small: int, vec: int, empty: tuple[int, int] = (1000, 1010)) -> Trace:
    """A trace of an ops_target count run with one op: N=5 calls of ``call`` instructions
    (``vec`` vector ones) and of ``small`` at one element, between empty regions."""
    marks, pos, vpos = [], 0, 0
    for tag, insns, v in [(1, empty[0], 0), (3, call * 5 + 1005, vec * 5),
                          (5, small * 5 + 1005, 0), (7, empty[1], 0)]:
        marks.append((tag, pos, vpos))
        pos += insns
        vpos += v
        marks.append((tag + 1, pos, vpos))
        pos += 37  # between regions: warm-up calls, inputs (not counted)
    return _trace(marks)


RESULT = {"n": 5, "capability": "X", "torch": "2.6.0", "threads": 1,
          "empty": [[1, 2], [7, 8]],
          "ops": {"add": {"tags": [3, 4], "small_tags": [5, 6]}}}


def test_empty_regions_are_subtracted_and_vectors_counted() -> None:
    row = ops_bench.analyse_process(_process(9000, 3000, 0), RESULT)
    assert row["empty_region"] == {"insns": [1000, 1010], "mean": 1005.0}
    assert row["ops"]["add"]["call"] == {"insns": 9000.0, "vector": 0.0}
    assert row["ops"]["add"]["small"] == {"insns": 3000.0, "vector": 0.0}


def test_an_empty_region_with_vector_instructions_is_refused() -> None:
    t = _trace([(1, 0, 0), (2, 1000, 3), (3, 1100, 3), (4, 2000, 3), (5, 2100, 3),
                (6, 3000, 3), (7, 3100, 3), (8, 4000, 3)])
    with pytest.raises(ValidationError, match="empty region executed vector"):
        ops_bench.analyse_process(t, RESULT)


def test_ratio_and_per_element_ratio() -> None:
    d = ops_bench.analyse_process(_process(9000, 3000, 0), RESULT)
    r = ops_bench.analyse_process(_process(3750, 3000, 100), RESULT)
    row = ops_bench.compare(d, r, size=1001, rows=1, cols=1, kinds={"add": "elementwise"})["add"]
    assert row["ratio"] == 2.4  # 9000 / 3750
    assert row["default_insns_per_element"] == 6.0  # (9000 - 3000) / 1000
    assert row["rvv_insns_per_element"] == 0.75
    assert row["ratio_per_element"] == 8.0
    assert row["rvv_vector_insns"] == 100.0


def test_summary_covers_float32_elementwise_ops_only() -> None:
    report = {"meta": {"cpu_models": {"rvv256": "..."}}, "ops": {
        "add": {"kind": "elementwise", "dtype": "float32",
                "rvv256": {"ratio": 8.0, "ratio_per_element": 9.0, "rvv_vector_insns": 5}},
        "exp": {"kind": "elementwise", "dtype": "float32",
                "rvv256": {"ratio": 2.0, "ratio_per_element": 4.0, "rvv_vector_insns": 0}},
        "add_float64": {"kind": "elementwise", "dtype": "float64",
                        "rvv256": {"ratio": 1.0, "ratio_per_element": 1.0,
                                   "rvv_vector_insns": 0}}}}
    ops_bench.summarise(report)
    s = report["summary"]["rvv256"]
    assert s["elementwise_float32_ops"] == 2
    assert s["elementwise_float32_ratio_min"] == 2.0
    assert s["elementwise_float32_ratio_geomean"] == 4.0
    assert s["ops_without_vector_insns"] == ["add_float64", "exp"]


def test_op_table_is_broad_and_unique() -> None:
    table = ops_target.op_table()
    keys = [ops_target.op_key(n, d) for n, d, _ in table]
    assert len(keys) == len(set(keys)) >= 24
    assert {d for _, d, _ in table} == {"float32", "float64"}
    assert {k for _, _, k in table} == {"elementwise", "reduction", "row"}
    for n in (ops_target.SIZE, ops_target.COLS):  # tails on every vector length
        assert all(n % (vl // 32) for vl in (128, 256, 512, 1024))
