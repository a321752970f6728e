#!/usr/bin/env python3
"""Render the measured figures of the docs from benchmarks/results/*.json, and check them.

    python benchmarks/doc_numbers.py --check  # exit 1 with a diff when a block is stale or a key
                                              # is missing; exit 1 for figures outside blocks
    python benchmarks/doc_numbers.py --write  # rewrite every block from the results
    python benchmarks/doc_numbers.py --lint   # only the lint

(Not ``numbers.py``: a script run from benchmarks/ would shadow the standard library's module.)

Every measured figure a doc shows sits in a marked block that this script owns:

    <!-- numbers:NAME -->
    | what | value | source |
    |---|---|---|
    | warm rebuild, wall | 180 s | `full_build.json: history.8.elapsed_s` |
    <!-- /numbers -->

One spec, ``benchmarks/doc_numbers.toml``, says which block shows which keys. A row::

    [[block.row]]
    what = "warm rebuild, wall"          # the first column (Markdown)
    file = "full_build.json"             # in benchmarks/results/
    key = "elapsed_s"                    # dotted path; list indices are numbers; a list of paths
                                         #   gives the format several values
    record = { started = "2026-11-26T12:00:49Z" }  # optional: the key is relative to the one
                                         #   object in the file whose fields equal these (so a
                                         #   record keeps its row when a script moves it into
                                         #   ``history``); the source column shows where it is
    divide = 60                          # optional: numbers are divided first (s -> min)
    format = "{0:.0f} min"               # optional: str.format over the values (unit, rounding)
    goal_max = 150                       # optional (one key): appends "(goal ≤ 150 min: met)" or
                                         #   "missed", the goal in the row's format

The lint (``[lint]`` in the spec) reads the docs named there (whole, or only the sections with the
given headings) and fails on every line outside the numbers blocks and code fences that holds a
measurement-looking figure (``12 s``, ``65.1 MB``, ``210x``, ``[709/1428]``, ...), unless
``[[lint.allow]]`` names that figure's phrase for that file with the reason it is no measurement
(a goal, a limit, a version, a bit width).

Exit codes: 0 up to date, 1 stale block / missing key / figure outside a block, 2 bad spec or
usage. ``--write`` changes nothing when any row cannot be rendered.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = "benchmarks/results"

BEGIN = re.compile(r"^<!-- numbers:([A-Za-z0-9_.-]+) -->\s*$")
END = re.compile(r"^<!-- /numbers -->\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")

# What a measurement looks like in prose: a number with a unit of time, size, speed, ratio or a
# count the benchmarks record, or ninja's [n/N] progress.
_UNITS = (
    "CPU-seconds|CPU-s|GFLOPS|MFLOPS|minutes|seconds|hours|checks|targets|packages|hits|misses|"
    "ELF files|MiB|GiB|KiB|MB|GB|kB|KB|TB|min|sec|ms|µs|s|h|x|×|%"
)
FIGURE = re.compile(rf"(?<![\w.+-])\d+(?:[.,]\d+)*\s?(?:{_UNITS})(?![\w])|\[\d+/\d+\]")

ROW_KEYS = {"what", "file", "key", "record", "divide", "format", "goal_max"}
BLOCK_KEYS = {"name", "doc", "row"}


class SpecError(Exception):
    """The spec itself is wrong (exit 2)."""


class Problem(Exception):
    """A doc or a results file does not agree with the spec (exit 1)."""


@dataclass(frozen=True)
class Row:
    what: str
    file: str
    keys: tuple[str, ...]
    record: dict[str, Any] = field(default_factory=dict)
    divide: float = 1.0
    format: str = "{0}"
    goal_max: int | float | None = None


@dataclass(frozen=True)
class Block:
    name: str
    doc: str
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class LintFile:
    path: str
    sections: tuple[str, ...] = ()  # headings whose sections are linted; empty: the whole file


@dataclass(frozen=True)
class Allow:
    file: str
    text: str
    why: str


@dataclass(frozen=True)
class Spec:
    blocks: tuple[Block, ...]
    lint_files: tuple[LintFile, ...]
    allow: tuple[Allow, ...]


# ---------------------------------------------------------------------------------------------
# spec


def _need(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise SpecError(f"{where}: missing {key!r}")
    if not isinstance(table[key], kind):
        raise SpecError(f"{where}: {key!r} must be a {kind.__name__}")
    return table[key]


def load_spec(path: Path) -> Spec:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"{path}: {exc}") from exc
    unknown = set(raw) - {"block", "lint"}
    if unknown:
        raise SpecError(f"{path}: unknown top-level keys {sorted(unknown)}")
    blocks: list[Block] = []
    for i, b in enumerate(raw.get("block", [])):
        where = f"{path.name}: block #{i + 1}"
        extra = set(b) - BLOCK_KEYS
        if extra:
            raise SpecError(f"{where}: unknown keys {sorted(extra)}")
        name = _need(b, "name", str, where)
        where = f"{path.name}: block {name!r}"
        if not BEGIN.match(f"<!-- numbers:{name} -->"):
            raise SpecError(f"{where}: a name is letters, digits, '.', '_' or '-'")
        rows = []
        for j, r in enumerate(_need(b, "row", list, where)):
            rwhere = f"{where} row #{j + 1}"
            extra = set(r) - ROW_KEYS
            if extra:
                raise SpecError(f"{rwhere}: unknown keys {sorted(extra)}")
            key = r.get("key")
            keys = (key,) if isinstance(key, str) else key
            if not isinstance(keys, list | tuple) or not keys or not all(
                isinstance(k, str) and k for k in keys
            ):
                raise SpecError(f"{rwhere}: 'key' must be a path or a list of paths")
            record = r.get("record", {})
            if not isinstance(record, dict):
                raise SpecError(f"{rwhere}: 'record' must be a table")
            divide = r.get("divide", 1)
            if not isinstance(divide, int | float) or isinstance(divide, bool) or divide == 0:
                raise SpecError(f"{rwhere}: 'divide' must be a non-zero number")
            goal = r.get("goal_max")
            if goal is not None and (
                not isinstance(goal, int | float) or isinstance(goal, bool) or len(keys) != 1
            ):
                raise SpecError(f"{rwhere}: 'goal_max' is a number, for a row with one key")
            rows.append(
                Row(
                    what=_need(r, "what", str, rwhere),
                    file=_need(r, "file", str, rwhere),
                    keys=tuple(keys),
                    record=record,
                    divide=float(divide),
                    format=r.get("format", "{0}"),
                    goal_max=goal,
                )
            )
        blocks.append(Block(name=name, doc=_need(b, "doc", str, where), rows=tuple(rows)))
    names = [b.name for b in blocks]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SpecError(f"{path.name}: block names used twice: {sorted(dup)}")
    lint = raw.get("lint", {})
    files = []
    for f in lint.get("files", []):
        if isinstance(f, str):
            files.append(LintFile(f))
        elif isinstance(f, dict) and isinstance(f.get("path"), str):
            files.append(LintFile(f["path"], tuple(f.get("sections", ()))))
        else:
            raise SpecError(f"{path.name}: lint.files entries are paths or {{path, sections}}")
    allow = []
    for a in lint.get("allow", []):
        where = f"{path.name}: lint.allow {a!r}"
        allow.append(
            Allow(_need(a, "file", str, where), _need(a, "text", str, where),
                  _need(a, "why", str, where))
        )
    return Spec(tuple(blocks), tuple(files), tuple(allow))


# ---------------------------------------------------------------------------------------------
# results


def _walk(obj: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, (*path, str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, (*path, str(i)))


def find_record(data: Any, record: dict[str, Any], fname: str) -> tuple[tuple[str, ...], Any]:
    """The one object in ``data`` whose fields equal ``record``."""
    hits = [
        (p, o) for p, o in _walk(data)
        if isinstance(o, dict) and all(k in o and o[k] == v for k, v in record.items())
    ]
    if len(hits) != 1:
        what = "no object" if not hits else f"{len(hits)} objects"
        raise Problem(f"{fname}: {what} with {record} (need exactly one)")
    return hits[0]


def lookup(obj: Any, key: str, fname: str, prefix: tuple[str, ...] = ()) -> tuple[str, Any]:
    """Follow a dotted path; return the full path and the value."""
    path = list(prefix)
    for part in key.split("."):
        path.append(part)
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            raise Problem(f"{fname} has no key {'.'.join(path)}")
    if isinstance(obj, dict | list) or obj is None:
        raise Problem(f"{fname}: {'.'.join(path)} is not a number or a string")
    return ".".join(path), obj


class Results:
    """benchmarks/results/*.json, read once each."""

    def __init__(self, root: Path) -> None:
        self.dir = root / RESULTS_DIR
        self._cache: dict[str, Any] = {}

    def load(self, fname: str) -> Any:
        if fname not in self._cache:
            p = self.dir / fname
            if p.parent != self.dir or p.suffix != ".json":
                raise Problem(f"{fname}: results are {RESULTS_DIR}/<name>.json")
            try:
                self._cache[fname] = json.loads(p.read_text())
            except FileNotFoundError as exc:
                raise Problem(f"{RESULTS_DIR}/{fname} does not exist") from exc
            except json.JSONDecodeError as exc:
                raise Problem(f"{RESULTS_DIR}/{fname}: {exc}") from exc
        return self._cache[fname]


def render_row(row: Row, results: Results) -> tuple[str, str]:
    data = results.load(row.file)
    prefix: tuple[str, ...] = ()
    if row.record:
        prefix, data = find_record(data, row.record, row.file)
    paths, values = [], []
    for key in row.keys:
        path, value = lookup(data, key, row.file, prefix)
        if isinstance(value, int | float) and not isinstance(value, bool) and row.divide != 1:
            value = value / row.divide
        paths.append(path)
        values.append(value)
    if isinstance(values[0], float) and not math.isfinite(values[0]):
        raise Problem(f"{row.file}: {paths[0]} is {values[0]}")
    try:
        text = row.format.format(*values)
        if row.goal_max is not None:
            if not isinstance(values[0], int | float) or isinstance(values[0], bool):
                raise Problem(f"{row.file}: {paths[0]} is not a number (the row has a goal)")
            verdict = "met" if values[0] <= row.goal_max else "missed"
            text += f" (goal ≤ {row.format.format(row.goal_max)}: {verdict})"
    except (IndexError, ValueError, TypeError) as exc:
        raise SpecError(f"row {row.what!r}: format {row.format!r}: {exc}") from exc
    return text, f"`{row.file}: {', '.join(paths)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_block(block: Block, results: Results) -> list[str]:
    lines = ["| what | value | source |", "|---|---|---|"]
    for row in block.rows:
        try:
            value, source = render_row(row, results)
        except Problem as exc:
            raise Problem(f"{block.doc}: block {block.name!r}, row {row.what!r}: {exc}") from exc
        lines.append(f"| {_cell(row.what)} | {_cell(value)} | {_cell(source)} |")
    return lines


# ---------------------------------------------------------------------------------------------
# docs


@dataclass
class Parsed:
    lines: list[str]
    blocks: dict[str, tuple[int, int]]  # name -> (index of begin marker, index of end marker)


def parse_doc(text: str, doc: str) -> Parsed:
    lines = text.splitlines()
    blocks: dict[str, tuple[int, int]] = {}
    open_name, open_at, fence = None, -1, False
    for i, line in enumerate(lines):
        if FENCE.match(line):
            fence = not fence
            continue
        if fence:
            continue
        m = BEGIN.match(line)
        if m:
            if open_name is not None:
                raise Problem(f"{doc}:{i + 1}: block {m.group(1)!r} starts inside {open_name!r}")
            if m.group(1) in blocks:
                raise Problem(f"{doc}:{i + 1}: block {m.group(1)!r} appears twice")
            open_name, open_at = m.group(1), i
        elif END.match(line):
            if open_name is None:
                raise Problem(f"{doc}:{i + 1}: <!-- /numbers --> without a block")
            blocks[open_name] = (open_at, i)
            open_name = None
    if open_name is not None:
        raise Problem(f"{doc}:{open_at + 1}: block {open_name!r} is not closed")
    return Parsed(lines, blocks)


def rendered_docs(spec: Spec, root: Path) -> dict[str, tuple[str, str]]:
    """doc -> (current text, text with every block rendered from the results)."""
    results = Results(root)
    by_doc: dict[str, list[Block]] = {}
    for b in spec.blocks:
        by_doc.setdefault(b.doc, []).append(b)
    problems: list[str] = []
    out: dict[str, tuple[str, str]] = {}
    for doc, blocks in by_doc.items():
        try:
            text = (root / doc).read_text()
        except FileNotFoundError:
            problems.append(f"{doc}: does not exist (named by the spec)")
            continue
        try:
            parsed = parse_doc(text, doc)
        except Problem as exc:
            problems.append(str(exc))
            continue
        wanted = {b.name for b in blocks}
        for name in sorted(set(parsed.blocks) - wanted):
            problems.append(f"{doc}: block {name!r} is not in the spec")
        lines = list(parsed.lines)
        # Replace from the bottom up so earlier indices stay valid.
        for b in sorted(blocks, key=lambda b: -parsed.blocks.get(b.name, (-1, -1))[0]):
            if b.name not in parsed.blocks:
                problems.append(
                    f"{doc}: no block {b.name!r}: add the two lines "
                    f"'<!-- numbers:{b.name} -->' and '<!-- /numbers -->' where it belongs"
                )
                continue
            try:
                body = render_block(b, results)
            except Problem as exc:
                problems.append(str(exc))
                continue
            start, end = parsed.blocks[b.name]
            lines[start + 1 : end] = body
        new = "\n".join(lines) + ("\n" if text.endswith("\n") else "")
        out[doc] = (text, new)
    if problems:
        raise Problem("\n".join(problems))
    return out


def lint(spec: Spec, root: Path) -> list[str]:
    """``doc:line: figure`` for each measurement-looking figure outside the numbers blocks."""
    found: list[str] = []
    for lf in spec.lint_files:
        try:
            text = (root / lf.path).read_text()
        except FileNotFoundError:
            found.append(f"{lf.path}: does not exist (named by [lint] files)")
            continue
        allowed = [a.text for a in spec.allow if a.file == lf.path]
        in_block = fence = False
        section_level, in_section = 0, not lf.sections
        seen: set[str] = set()
        for no, line in enumerate(text.splitlines(), 1):
            if FENCE.match(line):
                fence = not fence
                continue
            if fence:
                continue
            if BEGIN.match(line):
                in_block = True
            elif END.match(line):
                in_block = False
            if in_block:
                continue
            h = HEADING.match(line)
            if h and lf.sections:
                level = len(h.group(1))
                if h.group(2) in lf.sections:
                    in_section, section_level = True, level
                    seen.add(h.group(2))
                elif in_section and level <= section_level:
                    in_section = False
            if not in_section:
                continue
            spans = [
                (m.start(), m.start() + len(a))
                for a in allowed
                for m in re.finditer(re.escape(a), line)
            ]
            for m in FIGURE.finditer(line):
                if not any(s <= m.start() and m.end() <= e for s, e in spans):
                    found.append(f"{lf.path}:{no}: {m.group(0)!r} outside a numbers block")
        found += [f"{lf.path}: no section {s!r} (named by [lint] files)"
                  for s in lf.sections if s not in seen]
        # A stale allowance would let the next figure written into that phrase through unseen.
        found += [f"{lf.path}: allowed text {a!r} does not occur (drop it from [[lint.allow]])"
                  for a in allowed if a not in text]
    linted = {lf.path for lf in spec.lint_files}
    found += [f"{a.file}: [[lint.allow]] for a file that is not linted"
              for a in spec.allow if a.file not in linted]
    return found


# ---------------------------------------------------------------------------------------------
# command line


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.numbers-tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="blocks up to date and the lint clean")
    mode.add_argument("--write", action="store_true", help="rewrite the blocks from the results")
    mode.add_argument("--lint", action="store_true", help="only the lint")
    ap.add_argument("--spec", type=Path, default=None, help="default: benchmarks/doc_numbers.toml")
    ap.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    spec_path = args.spec or root / "benchmarks" / "doc_numbers.toml"
    try:
        spec = load_spec(spec_path)
        rc = 0
        if not args.lint:
            docs = rendered_docs(spec, root)
            for doc, (old, new) in docs.items():
                if old == new:
                    continue
                if args.write:
                    _write_atomic(root / doc, new)
                    print(f"numbers: rewrote {doc}")
                else:
                    sys.stdout.writelines(difflib.unified_diff(
                        old.splitlines(keepends=True), new.splitlines(keepends=True),
                        f"{doc} (now)", f"{doc} (from the results)"))
                    print(f"numbers: error: {doc} is stale (run benchmarks/doc_numbers.py --write)",
                          file=sys.stderr)
                    rc = 1
        if args.check or args.lint:
            for finding in lint(spec, root):
                print(f"numbers: error: {finding}", file=sys.stderr)
                rc = 1
        return rc
    except SpecError as exc:
        print(f"numbers: error: {exc}", file=sys.stderr)
        return 2
    except Problem as exc:
        for line in str(exc).splitlines():
            print(f"numbers: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
