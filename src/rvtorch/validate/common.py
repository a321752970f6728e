"""Shared helpers of the target-side validation modules.

Everything in this package runs INSIDE the Python under test (a riscv64/aarch64 interpreter under
QEMU, a board, or the x86 reference), so it imports only torch and the standard library. The host
copies the package into the guest, runs one suite per process and reads back a JSON result file:

    {"suite": "smoke", "role": "target", "ok": true,
     "checks": [{"name": ..., "ok": ..., "value": ..., "expected": ..., "tol": ..., "detail": ...}],
     "figures": {...}, "info": {...}, "timings": {"import_torch_s": ...}}

A suite never exits before writing its result: an exception becomes a failed check named
``crash`` so the host reports what broke instead of a bare exit status.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

# Exit status of a suite process: 0 every check passed, 1 a check failed, 3 the suite crashed.
EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_CRASH = 3

_T0 = time.perf_counter()


def normalise_capability(name: str) -> str:
    """ATen's CPU capability as one spelling: its scalar one is ``DEFAULT``, which torch 2.6 calls
    ``NO AVX`` on every arch without a capability of its own (x86 names, riscv64 without the
    aten-rvv patches); others upper-cased (``RVV``, ``AVX512``)."""
    up = name.upper()
    return "DEFAULT" if up in ("DEFAULT", "NO AVX") else up


def seed_all(seed: int) -> None:
    """Seed every generator a suite may touch (torch, random, numpy if present)."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy

        numpy.random.seed(seed % (2**32))
    except ImportError:
        pass


def close_report(
    actual: Sequence[float], expected: Sequence[float], *, rtol: float, atol: float
) -> dict[str, Any]:
    """Compare two flat sequences the way ``torch.allclose`` does, in plain Python.

    Returns ``ok`` plus the worst absolute error, the worst error relative to the expected value
    and the index of the worst element, so a failure says where and by how much.
    A NaN matches only a NaN; an infinity only the same infinity.
    """
    if len(actual) != len(expected):
        return {"ok": False, "detail": f"length {len(actual)} != expected {len(expected)}",
                "max_abs_err": math.inf, "max_rel_err": math.inf, "worst_index": -1}
    ok = True
    max_abs = 0.0
    max_rel = 0.0
    worst = -1
    worst_excess = -math.inf
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        a = float(a)
        e = float(e)
        if math.isnan(e) or math.isnan(a):
            if not (math.isnan(e) and math.isnan(a)):
                ok = False
                worst, worst_excess, max_abs = i, math.inf, math.inf
            continue
        if math.isinf(e) or math.isinf(a):
            if a != e:
                ok = False
                worst, worst_excess, max_abs = i, math.inf, math.inf
            continue
        err = abs(a - e)
        bound = atol + rtol * abs(e)
        max_abs = max(max_abs, err)
        if e != 0.0:
            max_rel = max(max_rel, err / abs(e))
        if err - bound > worst_excess:
            worst, worst_excess = i, err - bound
        if err > bound:
            ok = False
    return {"ok": ok, "max_abs_err": max_abs, "max_rel_err": max_rel, "worst_index": worst,
            "detail": "" if ok else f"element {worst} off by more than atol+rtol*|expected|"}


def tensor_close(actual: Any, expected: Any, *, rtol: float, atol: float) -> dict[str, Any]:
    """:func:`close_report` for tensors: shapes and dtypes must match, values within tolerance."""
    import torch

    a = actual.detach()
    e = expected.detach()
    if tuple(a.shape) != tuple(e.shape):
        return {"ok": False, "detail": f"shape {tuple(a.shape)} != expected {tuple(e.shape)}",
                "max_abs_err": math.inf, "max_rel_err": math.inf, "worst_index": -1}
    if a.dtype != e.dtype:
        return {"ok": False, "detail": f"dtype {a.dtype} != expected {e.dtype}",
                "max_abs_err": math.inf, "max_rel_err": math.inf, "worst_index": -1}
    if a.is_complex():
        a = torch.view_as_real(a)
        e = torch.view_as_real(e)
    if a.dtype == torch.bool:
        a = a.to(torch.int64)
        e = e.to(torch.int64)
    # Doubles keep integer values exact (int64 tensors in these suites are small).
    return close_report(
        a.to(torch.float64).flatten().tolist(), e.to(torch.float64).flatten().tolist(),
        rtol=rtol, atol=atol,
    )


def tensor_to_json(t: Any) -> dict[str, Any]:
    """A tensor as ``{"dtype", "shape", "data"}``; complex as (real, imag) pairs, bool as 0/1.

    JSON doubles hold every float32/float16/bfloat16 value and every int64 used here exactly, so
    a golden value survives the trip and can be read (or deliberately broken) without torch.
    """
    import torch

    t = t.detach().cpu()
    dtype = str(t.dtype).replace("torch.", "")
    shape = list(t.shape)
    if t.is_complex():
        t = torch.view_as_real(t)
    if t.dtype == torch.bool:
        t = t.to(torch.int64)
    elif t.is_floating_point():
        t = t.to(torch.float64)
    return {"dtype": dtype, "shape": shape, "data": t.flatten().tolist()}


def tensor_from_json(d: dict[str, Any]) -> Any:
    import torch

    dtype = getattr(torch, d["dtype"])
    if dtype.is_complex:
        real = torch.tensor(d["data"], dtype=torch.float64).reshape(*d["shape"], 2)
        return torch.view_as_complex(real.contiguous()).to(dtype)
    if dtype == torch.bool:
        return torch.tensor(d["data"], dtype=torch.int64).reshape(d["shape"]).to(torch.bool)
    src = torch.float64 if dtype.is_floating_point else torch.int64
    return torch.tensor(d["data"], dtype=src).reshape(d["shape"]).to(dtype)


def compare_entry(actual: dict[str, Any], expected: dict[str, Any], *, rtol: float,
                  atol: float) -> dict[str, Any]:
    """Compare two :func:`tensor_to_json` values (plain Python: testable without torch)."""
    for key in ("dtype", "shape"):
        if actual.get(key) != expected.get(key):
            return {"ok": False, "max_abs_err": math.inf, "max_rel_err": math.inf,
                    "worst_index": -1,
                    "detail": f"{key} {actual.get(key)} != expected {expected.get(key)}"}
    return close_report(actual["data"], expected["data"], rtol=rtol, atol=atol)


class Result:
    """The result of one suite run: checks, figures, info and timings, written as JSON."""

    def __init__(self, suite: str, role: str) -> None:
        self.suite = suite
        self.role = role
        self.checks: list[dict[str, Any]] = []
        self.figures: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    def check(self, name: str, ok: bool, *, value: Any = None, expected: Any = None,
              tol: Any = None, detail: str = "", basis: str | None = None) -> bool:
        """Record one check. ``basis`` (optional) says what the checked figure was computed
        from when that is not obvious, e.g. ``target_training``: weights the target trained
        itself, versus ``host_training``: weights the host trained, evaluated here."""
        entry = {"name": name, "ok": bool(ok), "value": _jsonable(value),
                 "expected": _jsonable(expected), "tol": _jsonable(tol), "detail": detail}
        if basis is not None:
            entry["basis"] = basis
        self.checks.append(entry)
        mark = "ok  " if ok else "FAIL"
        print(f"[{self.suite}] {mark} {name}" + (f": {detail}" if detail and not ok else ""),
              file=sys.stderr, flush=True)
        return bool(ok)

    def check_close(self, name: str, actual: Any, expected: Any, *, rtol: float,
                    atol: float, basis: str | None = None) -> bool:
        """A tensor comparison as a check; the tolerance is recorded next to the result."""
        rep = tensor_close(actual, expected, rtol=rtol, atol=atol)
        return self.check(name, rep["ok"], value={"max_abs_err": rep["max_abs_err"],
                                                  "max_rel_err": rep["max_rel_err"]},
                          tol={"rtol": rtol, "atol": atol}, detail=rep["detail"], basis=basis)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c["ok"] for c in self.checks)

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[key] = round(time.perf_counter() - t, 4)

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, "role": self.role, "ok": self.ok,
                "checks": self.checks, "figures": _jsonable(self.figures),
                "info": _jsonable(self.info), "timings": self.timings}

    def write(self, path: str) -> None:
        self.timings.setdefault("total_s", round(time.perf_counter() - _T0, 4))
        write_json(path, self.to_json())


def write_json(path: str, data: Any) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, allow_nan=True)
    os.replace(tmp, path)


def atomic_torch_save(obj: Any, path: str) -> None:
    import torch

    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _jsonable(x: Any) -> Any:
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return _jsonable(x.tolist())
    return str(x)


def base_parser(suite: str, doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"validate.{suite}", description=doc)
    p.add_argument("--role", choices=("host", "target"), required=True,
                   help="host: compute the references; target: compare with them")
    p.add_argument("--data", required=True, help="directory of references shared by both roles")
    p.add_argument("--out", required=True, help="result JSON file")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1: deterministic reductions everywhere)")
    return p


def run_suite(suite: str, body: Callable[[argparse.Namespace, Result], None],
              parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse args, import torch (timed), run ``body`` and always write the result file."""
    args = parser.parse_args(argv)
    res = Result(suite, args.role)
    try:
        with res.timed("import_torch_s"):
            import torch
        torch.set_num_threads(args.threads)
        res.info["torch_version"] = torch.__version__
        res.info["torch_file"] = torch.__file__
        res.info["python"] = sys.version.split()[0]
        res.info["machine"] = os.uname().machine
        body(args, res)
    except Exception as exc:
        res.check("crash", False, detail=f"{type(exc).__name__}: {exc}")
        res.info["traceback"] = traceback.format_exc()
        res.write(args.out)
        return EXIT_CRASH
    res.write(args.out)
    return EXIT_OK if res.ok else EXIT_CHECK_FAILED
