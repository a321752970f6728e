"""Every measured figure in the converted docs comes from a results key a benchmark script wrote.

The first two tests run benchmarks/doc_numbers.py on the repository itself: a block that no longer
matches benchmarks/results/*.json (a hand-edited number, a rerun benchmark whose blocks were not
rewritten, a key that went away) or a figure written outside a block fails here. The rest prove
the mechanism on a small repository in a temporary directory.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "doc_numbers.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rvtorch_bench_numbers", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


numbers = _load()  # benchmarks/doc_numbers.py


# --------------------------------------------------------------------------- the repository


def test_repository_blocks_match_the_results() -> None:
    spec = numbers.load_spec(ROOT / "benchmarks" / "doc_numbers.toml")
    assert spec.blocks, "the spec names no block"
    stale = {
        doc: "".join(difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), doc, "from results"))
        for doc, (old, new) in numbers.rendered_docs(spec, ROOT).items()
        if old != new
    }
    assert not stale, "stale numbers blocks (run benchmarks/doc_numbers.py --write):\n" + "\n".join(
        stale.values())


def test_repository_docs_have_no_figure_outside_a_block() -> None:
    spec = numbers.load_spec(ROOT / "benchmarks" / "doc_numbers.toml")
    assert spec.lint_files
    findings = numbers.lint(spec, ROOT)
    assert not findings, "\n".join(findings)


# --------------------------------------------------------------------------- the mechanism

SPEC = """
[[block]]
name = "b1"
doc = "docs/a.md"

[[block.row]]
what = "warm build"
file = "r.json"
key = "warm.elapsed_s"
format = "{0} s"
goal_max = 600

[[block.row]]
what = "wheel"
file = "r.json"
key = "wheel.size_mb"
format = "{0:.1f} MB"
goal_max = 60

[[block.row]]
what = "compile"
file = "r.json"
record = { started = "T2" }
key = "compile_s"
divide = 60
format = "{0:.0f} min"

[[block.row]]
what = "progress"
file = "r.json"
record = { started = "T2" }
key = ["ninja.done", "ninja.total"]
format = "[{0}/{1}]"

[lint]
files = ["docs/a.md", { path = "docs/b.md", sections = ["Measured"] }]

[[lint.allow]]
file = "docs/a.md"
text = "at most 60 MB"
why = "a goal"
"""

RESULTS = {
    "warm": {"elapsed_s": 180},
    "wheel": {"size_mb": 65.14},
    "history": [{"started": "T1", "compile_s": 60}, {"started": "T2", "compile_s": 5391,
                                                     "ninja": {"done": 1311, "total": 1313}}],
}

DOC_A = """# A

The wheel should be at most 60 MB.

<!-- numbers:b1 -->
<!-- /numbers -->

```
$ du -sh build    # 12 MB in a code fence is an example, not a claim
```
"""

DOC_B = """# B

## Intro

It took 5 min (not linted: only the Measured section is).

## Measured

Nothing measured in prose here.

## After
Also 7 s here, outside the section.
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "benchmarks" / "doc_numbers.toml").write_text(SPEC)
    (tmp_path / "benchmarks" / "results" / "r.json").write_text(json.dumps(RESULTS))
    (tmp_path / "docs" / "a.md").write_text(DOC_A)
    (tmp_path / "docs" / "b.md").write_text(DOC_B)
    return tmp_path


def run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """doc_numbers.py's main() in this process (a new interpreter per call is slow on a loaded CI
    machine); test_the_script_runs_as_a_command covers the command itself."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = numbers.main([*args, "--root", str(repo)])
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def test_the_script_runs_as_a_command(repo: Path) -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), "--check", "--root", str(repo)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 1 and "no block" not in res.stderr and "stale" in res.stderr
    res = subprocess.run([sys.executable, str(SCRIPT), "--write", "--root", str(repo)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0 and "rewrote docs/a.md" in res.stdout


def test_write_renders_values_units_goals_and_sources(repo: Path) -> None:
    assert run(repo, "--check").returncode == 1  # the block is still empty
    assert run(repo, "--write").returncode == 0
    text = (repo / "docs" / "a.md").read_text()
    assert "| warm build | 180 s (goal ≤ 600 s: met) | `r.json: warm.elapsed_s` |" in text
    assert "| wheel | 65.1 MB (goal ≤ 60.0 MB: missed) | `r.json: wheel.size_mb` |" in text
    assert "| compile | 90 min | `r.json: history.1.compile_s` |" in text
    assert "| progress | [1311/1313] | `r.json: history.1.ninja.done, history.1.ninja.total` |" \
        in text
    res = run(repo, "--check")
    assert res.returncode == 0, res.stderr


def test_a_hand_edited_number_fails_with_a_diff(repo: Path) -> None:
    run(repo, "--write")
    doc = repo / "docs" / "a.md"
    doc.write_text(doc.read_text().replace("65.1 MB", "59.0 MB"))
    res = run(repo, "--check")
    assert res.returncode == 1
    assert "-| wheel | 59.0 MB" in res.stdout and "+| wheel | 65.1 MB" in res.stdout
    assert "docs/a.md is stale" in res.stderr


def test_a_new_result_makes_the_block_stale(repo: Path) -> None:
    run(repo, "--write")
    data = dict(RESULTS, warm={"elapsed_s": 700})
    (repo / "benchmarks" / "results" / "r.json").write_text(json.dumps(data))
    assert run(repo, "--check").returncode == 1
    run(repo, "--write")
    assert "700 s (goal ≤ 600 s: missed)" in (repo / "docs" / "a.md").read_text()


def test_a_missing_key_fails_and_write_changes_nothing(repo: Path) -> None:
    run(repo, "--write")
    before = (repo / "docs" / "a.md").read_text()
    data = {k: v for k, v in RESULTS.items() if k != "wheel"}
    data["warm"] = {"elapsed_s": 1}
    (repo / "benchmarks" / "results" / "r.json").write_text(json.dumps(data))
    for mode in ("--check", "--write"):
        res = run(repo, mode)
        assert res.returncode == 1
        assert "row 'wheel': r.json has no key wheel" in res.stderr
    assert (repo / "docs" / "a.md").read_text() == before


def test_a_record_must_be_unique(repo: Path) -> None:
    data = json.loads(json.dumps(RESULTS))
    data["history"].append({"started": "T2", "compile_s": 1})
    (repo / "benchmarks" / "results" / "r.json").write_text(json.dumps(data))
    res = run(repo, "--check")
    assert res.returncode == 1 and "2 objects with {'started': 'T2'}" in res.stderr


def test_a_record_keeps_its_row_when_a_script_moves_it(repo: Path) -> None:
    """bench_full_build.py moves the latest entry of an arch into ``history``: the row follows."""
    data = json.loads(json.dumps(RESULTS))
    data["riscv64"] = data["history"].pop(1)
    (repo / "benchmarks" / "results" / "r.json").write_text(json.dumps(data))
    run(repo, "--write")
    assert "| compile | 90 min | `r.json: riscv64.compile_s` |" in (
        repo / "docs" / "a.md").read_text()


def test_blocks_and_spec_must_agree(repo: Path) -> None:
    doc = repo / "docs" / "a.md"
    doc.write_text(DOC_A + "\n<!-- numbers:nobody -->\n<!-- /numbers -->\n")
    res = run(repo, "--check")
    assert res.returncode == 1 and "block 'nobody' is not in the spec" in res.stderr
    doc.write_text(DOC_A.replace("<!-- numbers:b1 -->\n<!-- /numbers -->\n", ""))
    res = run(repo, "--check")
    assert res.returncode == 1 and "no block 'b1'" in res.stderr
    doc.write_text(DOC_A.replace("<!-- /numbers -->\n", ""))
    res = run(repo, "--check")
    assert res.returncode == 1 and "block 'b1' is not closed" in res.stderr


def test_a_bad_spec_is_a_usage_error(repo: Path) -> None:
    spec = repo / "benchmarks" / "doc_numbers.toml"
    spec.write_text(SPEC.replace('key = "warm.elapsed_s"', 'kee = "warm.elapsed_s"'))
    res = run(repo, "--check")
    assert res.returncode == 2 and "unknown keys ['kee']" in res.stderr
    assert res.stderr.count("\n") == 1  # one line


def test_lint_names_file_and_line_of_a_figure_outside_a_block(repo: Path) -> None:
    run(repo, "--write")
    assert run(repo, "--lint").returncode == 0
    doc = repo / "docs" / "a.md"
    doc.write_text(doc.read_text() + "\nA from-clean build takes 93 min and 2x the RAM.\n")
    res = run(repo, "--check")
    assert res.returncode == 1
    n = len(doc.read_text().splitlines())
    assert f"docs/a.md:{n}: '93 min' outside a numbers block" in res.stderr
    assert f"docs/a.md:{n}: '2x' outside a numbers block" in res.stderr


def test_lint_allowance_covers_only_its_phrase(repo: Path) -> None:
    run(repo, "--write")
    doc = repo / "docs" / "a.md"
    doc.write_text(doc.read_text() + "\nThe wheel is 60 MB now.\n")
    res = run(repo, "--lint")
    assert res.returncode == 1 and "'60 MB' outside a numbers block" in res.stderr
    assert res.stderr.count("outside a numbers block") == 1  # the goal line itself is allowed


def test_lint_reads_only_the_named_sections(repo: Path) -> None:
    run(repo, "--write")
    doc = repo / "docs" / "b.md"
    assert run(repo, "--lint").returncode == 0  # '5 min' and '7 s' lie outside "Measured"
    doc.write_text(DOC_B.replace("Nothing measured in prose here.", "It took 12.5 s."))
    res = run(repo, "--lint")
    assert res.returncode == 1 and "docs/b.md:9: '12.5 s'" in res.stderr
    doc.write_text(DOC_B.replace("## Measured", "## Timing"))
    res = run(repo, "--lint")
    assert res.returncode == 1 and "no section 'Measured'" in res.stderr


def test_lint_flags_a_stale_allowance(repo: Path) -> None:
    run(repo, "--write")
    doc = repo / "docs" / "a.md"
    doc.write_text(doc.read_text().replace("at most 60 MB", "small"))
    res = run(repo, "--lint")
    assert res.returncode == 1 and "allowed text 'at most 60 MB' does not occur" in res.stderr


@pytest.mark.parametrize(
    ("line", "figures"),
    [
        ("took 12 s, then 1.5 min and 2 h", ["12 s", "1.5 min", "2 h"]),
        ("65.1 MB, 2.26 GB, 240 MiB, 0.3 %, 210x, 330 CPU-s", [
            "65.1 MB", "2.26 GB", "240 MiB", "0.3 %", "210x", "330 CPU-s"]),
        ("ninja [709/1428], 5397 hits, 297 checks", ["[709/1428]", "5397 hits", "297 checks"]),
        ("rvv256, x86-64, -O3, cp313, C++17, 2 steps, v1.0, sve256=on", []),
    ],
)
def test_what_counts_as_a_figure(line: str, figures: list[str]) -> None:
    assert [m.group(0) for m in numbers.FIGURE.finditer(line)] == figures


def test_write_touches_only_the_blocks(repo: Path) -> None:
    """--write touches only what lies between the markers."""
    run(repo, "--write")
    text = (repo / "docs" / "a.md").read_text()
    outside = text.split("<!-- numbers:b1 -->")[0] + text.split("<!-- /numbers -->")[1]
    expected = DOC_A.split("<!-- numbers:b1 -->")[0] + DOC_A.split("<!-- /numbers -->")[1]
    assert outside == expected
