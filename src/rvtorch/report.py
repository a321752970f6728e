"""The validation report: ``report.json`` (every figure), ``report.html`` and PNG plots.

The JSON is the record (CPU models, torch build config, every check with its tolerance, timings);
the HTML and the plots are views of it. Plots use matplotlib on the host (Agg, no display).
Everything is written into a temp dir next to ``out`` and renamed into place.
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import UsageError

PLOT_NFE = (("euler1", "NFE 1 (Euler)"), ("euler2", "NFE 2 (Euler)"),
            ("heun9_uniform", "NFE 9 (Heun)"))


def write_report(report: dict[str, Any], out: Path) -> Path:
    """Write report.json, PNG plots and report.html into ``out`` (replaced atomically)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / "report.json").write_text(json.dumps(report, indent=1, default=str))
        plots = make_plots(report, tmp)
        report_plots = {k: v.name for k, v in plots.items()}
        (tmp / "report.html").write_text(render_html(report, report_plots))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------------------------------------
# Data pulled out of the report (shared by plots and HTML)


def _suite(run: dict[str, Any], name: str) -> dict[str, Any]:
    return ((run.get("suites") or {}).get(name) or {}).get("result") or {}


def reflow_sources(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, reflow result) for the host reference and every target CPU model."""
    out = []
    host = (report.get("host") or {}).get("results", {}).get("reflow")
    if host:
        out.append(("x86 host", host))
    for run in report.get("runs", []):
        r = _suite(run, "reflow")
        if r:
            out.append((f"{report.get('arch')} {run['cpu']}", r))
    return out


def fl_sources(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    host = (report.get("host") or {}).get("results", {}).get("fl")
    if host:
        out.append(("x86 host", host))
    for run in report.get("runs", []):
        r = _suite(run, "fl")
        if r:
            out.append((f"{report.get('arch')} {run['cpu']}", r))
    return out


def datasets(result: dict[str, Any]) -> list[str]:
    figs = result.get("figures") or {}
    return [k for k, v in figs.items() if isinstance(v, dict) and "teacher" in v]


def parity_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per compared figure: what, CPU model, host value, target value, error, tol, ok."""
    rows: list[dict[str, Any]] = []
    for run in report.get("runs", []):
        for suite in ("smoke", "reflow", "fl", "ops"):
            for c in _suite(run, suite).get("checks", []):
                if c.get("tol") is None and "match" not in c["name"]:
                    continue
                compared = c["name"].startswith("op:") or c["name"] == "rng_randn"
                if suite == "smoke" and not compared:
                    continue
                rows.append({"cpu": run["cpu"], "suite": suite, "name": c["name"],
                             "value": c.get("value"), "expected": c.get("expected"),
                             "tol": c.get("tol"), "ok": c["ok"]})
    return rows


# ---------------------------------------------------------------------------------------------
# Plots


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError("the report's plots need matplotlib on the host",
                         hint="pip install 'rvtorch[validate]'") from exc
    return plt


def make_plots(report: dict[str, Any], out: Path) -> dict[str, Path]:
    plt = _pyplot()
    plots: dict[str, Path] = {}
    sources = reflow_sources(report)
    # Samples: the first target CPU model (else the host), teacher vs student at NFE 1/2/9.
    if sources:
        label, res = sources[1] if len(sources) > 1 else sources[0]
        for ds in datasets(res):
            samples = res["figures"][ds].get("samples") or {}
            if not samples:
                continue
            fig, axes = plt.subplots(2, len(PLOT_NFE) + 1, figsize=(13, 6.4), sharex=True,
                                     sharey=True)
            data = samples.get("data", [])
            for row, who in enumerate(("teacher", "student")):
                ax = axes[row][0]
                _scatter(ax, data, "tab:gray")
                ax.set_title("data (held out)" if row == 0 else "")
                ax.set_ylabel(who)
                for col, (key, title) in enumerate(PLOT_NFE, start=1):
                    ax = axes[row][col]
                    _scatter(ax, data, "lightgray")
                    _scatter(ax, samples.get(f"{who}_{key}", []),
                             "tab:blue" if who == "teacher" else "tab:orange")
                    sw = res["figures"][ds][who].get(f"sw_{key}")
                    ax.set_title(f"{title}\nsliced W {sw:.3f}" if sw is not None else title,
                                 fontsize=9)
            fig.suptitle(f"ReFlow {ds}: teacher (1-RF) vs student (2-RF), {label}")
            fig.tight_layout()
            path = out / f"reflow_samples_{ds}.png"
            fig.savefig(path, dpi=80)
            plt.close(fig)
            plots[f"reflow_samples_{ds}"] = path
        # Straightness: teacher vs student for the host and every CPU model.
        for ds in datasets(sources[0][1]):
            labels, teach, stud = [], [], []
            for lab, r in sources:
                f = (r.get("figures") or {}).get(ds)
                if not f:
                    continue
                labels.append(lab)
                teach.append(f["teacher"]["straightness"])
                stud.append(f["student"]["straightness"])
            fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(labels), 4))
            xs = list(range(len(labels)))
            ax.bar([x - 0.2 for x in xs], teach, 0.4, label="teacher (1-RF)")
            ax.bar([x + 0.2 for x in xs], stud, 0.4, label="student (2-RF)")
            ax.set_yscale("log")
            ax.set_xticks(xs, labels, rotation=15, fontsize=8)
            ax.set_ylabel("straightness (log)")
            ax.set_title(f"Straightness, {ds}")
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = out / f"straightness_{ds}.png"
            fig.savefig(path, dpi=80)
            plt.close(fig)
            plots[f"straightness_{ds}"] = path
    fl = fl_sources(report)
    if fl:
        fig, ax = plt.subplots(figsize=(7, 4))
        for lab, r in fl:
            for scheme, d in ((r.get("figures") or {}).get("fl") or {}).items():
                acc = d.get("accuracy") or []
                ax.plot(range(1, len(acc) + 1), acc, marker="o",
                        linestyle="-" if scheme == "master-worker" else "--",
                        label=f"{lab} {scheme}")
        ax.axhline(0.9, color="gray", linewidth=0.8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("round")
        ax.set_ylabel("held-out accuracy")
        ax.set_title("FedAvg on 8x8 digits (gloo), per round")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / "fl_accuracy.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        plots["fl_accuracy"] = path
    return plots


def _scatter(ax: Any, pts: list[list[float]], color: str) -> None:
    if pts:
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=3, c=color, alpha=0.7)


# ---------------------------------------------------------------------------------------------
# HTML


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return str(x)
        return f"{x:.4g}"
    if isinstance(x, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in x.items())
    if isinstance(x, list) and len(x) > 6:
        return "[" + ", ".join(_fmt(v) for v in x[:6]) + ", ...]"
    if isinstance(x, list):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    return str(x)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = []
    for r in rows:
        cells = []
        for c in r:
            cls = ""
            if c is True or c == "ok":
                cls, c = ' class="ok"', "ok"
            elif c is False or (isinstance(c, str) and c.startswith("FAIL")):
                cls, c = ' class="fail"', c if isinstance(c, str) else "FAIL"
            elif isinstance(c, str) and c.startswith("SKIPPED"):
                cls = ' class="skip"'
            cells.append(f"<td{cls}>{_e(_fmt(c))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{h}</tr>{''.join(body)}</table>"


def _status_cell(s: dict[str, Any]) -> str:
    """A suite's state for the runs table: ok, FAIL <problem> or SKIPPED (<reason>)."""
    status = s.get("status") or ("passed" if s.get("ok") else "failed")
    if status == "skipped":
        return f"SKIPPED ({s.get('skip_reason') or '?'})"
    return "ok" if status == "passed" else "FAIL " + (s.get("problem") or "")


def render_html(report: dict[str, Any], plots: dict[str, str]) -> str:
    ok = report.get("ok")
    verdict = report.get("verdict") or ("passed" if ok else "failed")
    head_cls, head = {"passed": ("ok", "PASS"), "skipped": ("skip", "INCOMPLETE: SKIPPED")}.get(
        verdict, ("fail", "FAIL"))
    qemu = report.get("qemu") or {}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>rvtorch validation: {_e(report.get('arch'))}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
        ".ok{background:#dfd}.fail{background:#fdd}.skip{background:#ffe9a8}pre{background:#f6f6f6;padding:1em;"
        "font-size:12px;overflow:auto}</style></head><body>",
        f"<h1>Validation of torch on {_e(report.get('arch'))}: "
        f"<span class='{head_cls}'>{head}</span></h1>",
        f"<p>{report.get('checks_total', 0)} checks, {len(report.get('failures', []))} failed, "
        f"{len(report.get('skipped', []))} suite run(s) skipped; "
        f"torch from {_e((report.get('target') or {}).get('torch_source'))} "
        f"{_e((report.get('target') or {}).get('wheel') or '')}; QEMU "
        f"{_e(qemu.get('version'))} ({_e(qemu.get('mode'))}); "
        f"wall time {_e(report.get('wall_s'))} s; created {_e(report.get('created'))}.</p>",
    ]
    if report.get("failures"):
        parts.append("<h2>Failures</h2><ul>" + "".join(
            f"<li>{_e(f)}</li>" for f in report["failures"]) + "</ul>")
    if report.get("skipped"):
        parts.append("<h2>Skipped (not a pass)</h2><ul>" + "".join(
            f"<li class='skip'>{_e(f)}</li>" for f in report["skipped"]) + "</ul>")
    if report.get("skipped_checks"):
        parts.append("<h2>Skipped checks (not a pass, not a failure)</h2><ul>" + "".join(
            f"<li class='skip'>{_e(f)}</li>" for f in report["skipped_checks"]) + "</ul>")
    # CPU models, suites and timings
    rows = []
    host_t = (report.get("host") or {}).get("timings_s") or {}
    for run in report.get("runs", []):
        for suite, s in run["suites"].items():
            info = (s.get("result") or {}).get("info") or {}
            blas = info.get("blas") or {}
            rows.append([run["cpu"], run["qemu_cpu"], suite, _status_cell(s),
                         round(s["wall_s"], 1), round(s.get("cpu_s", 0.0), 1),
                         host_t.get(suite, ""),
                         blas.get("corename", info.get("openblas_verbose") or "")
                         if suite == "smoke" else ""])
    parts.append("<h2>Runs</h2>" + _table(
        ["CPU model", "-cpu", "suite", "result", "wall s (QEMU)", "CPU s (QEMU)",
         "wall s x86 (making refs)",
         "BLAS kernel"], rows))
    # Parity
    prow = [[r["cpu"], r["suite"], r["name"], r["value"], r["expected"], r["tol"], r["ok"]]
            for r in parity_rows(report)]
    parts.append("<h2>Host (x86) vs target parity</h2>" + _table(
        ["CPU model", "suite", "check", "target / error", "host", "tolerance", "ok"], prow))
    # ReFlow figures
    for label, res in reflow_sources(report):
        for ds in datasets(res):
            f = res["figures"][ds]
            mrows = [[k, f["teacher"].get(k), f["student"].get(k)] for k in f["teacher"]]
            eff = (res.get("figures") or {}).get("effects", {}).get(ds, {})
            parts.append(f"<h3>ReFlow {_e(ds)}, {_e(label)}</h3><p>straightness drop "
                         f"{_fmt(eff.get('straightness_drop'))}x, 1-step error drop "
                         f"{_fmt(eff.get('one_step_error_drop'))}x</p>"
                         + _table(["metric", "teacher", "student"], mrows))
    for key, name in sorted(plots.items()):
        parts.append(f"<h3>{_e(key)}</h3><img src='{_e(name)}' alt='{_e(key)}'>")
    # Build configuration and vector scan
    for run in report.get("runs", [])[:1]:
        info = _suite(run, "smoke").get("info") or {}
        if info.get("config_show"):
            parts.append("<h2>torch build configuration (target)</h2><pre>"
                         + _e(info["config_show"]) + "</pre>")
    vs = report.get("vector_scan") or {}
    if vs.get("libraries"):
        parts.append("<h2>Vector instructions in the binaries</h2>" + _table(
            ["library", "instructions", "vector"],
            [[k, v.get("instructions"), v.get("vector")] for k, v in vs["libraries"].items()]))
    elif vs.get("skipped"):
        parts.append(f"<p>Vector scan skipped: {_e(vs['skipped'])}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
