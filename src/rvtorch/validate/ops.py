"""Op-parity suite: ATen's CPU kernels over an op x dtype x shape table, against x86 and DEFAULT.

Every case of the table (:func:`cases`) is one op on one dtype and one *shape kind*:

* ``tails``: contiguous 1-D tensors of lengths that are no multiple of any vector length
  (1, 7, 17, 33, 257, 1031), so every vectorised loop runs its remainder path;
* ``strided``: a transposed 2-D view and a step-3 slice (non-contiguous inputs);
* ``broadcast``: (17, 1) with (1, 33), a row vector against a matrix, a 0-dim tensor;
* ``special``: NaN, +-Inf, +-0.0, denormals, the limits and ordinary values (binary ops get every
  pair of them);
* ``rows``/``cols``: reductions and normalisations along each dim of a contiguous or transposed
  matrix.

Inputs come from Python's own Mersenne Twister (``random.Random``, seeded per case from its
name): bit-identical on every machine, and they never pass through a torch kernel before the op
under test. Each case's input digest travels in the golden file, so host and target provably
computed on the same numbers.

Role ``host`` (the x86 reference) runs the table and writes ``ops_golden.json``. Role ``target``
runs it again and compares, element by element and in plain Python (never with the kernels under
test): (a) ``golden:<case>`` against the x86 values; and it writes its own values (``--outputs``)
so that (b) a second process with ``ATEN_CPU_CAPABILITY=default`` (``--against``) compares the
scalar kernels with the chosen capability's, ``capability:<case>``. That second process is
started by whoever runs the suite (``rvtorch validate`` does it only when torch chose a capability
other than DEFAULT): under ``qemu -L`` a guest cannot start a guest child itself. Where DEFAULT is
the only capability, (b) is reported in ``skipped_checks`` with its reason: not a pass, not a
failure, unless ``--require-capability-parity`` asks for it (then it is a failed check).

Each check records op, dtype, shape kind, capability, the reference, the largest absolute and ulp
error, the number of elements out of tolerance and whether the NaN/+Inf/-Inf pattern agrees.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .common import Result, base_parser, normalise_capability, run_suite, write_json

SEED = 20261205
GOLDEN = "ops_golden.json"
TAILS = (1, 7, 17, 33, 257, 1031)
# --full: every length around the vector widths of RVV 128..1024 bits and AVX2/AVX512 (4, 8, 16,
# 32 elements, times the unroll factor 2 of ATen's loops), and one long vector.
FULL_TAILS = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255,
              257, 1031, 4099)

FLOAT_DTYPES = ("float32", "float64")
INT_DTYPES = ("int32", "int64")
CAST_DTYPES = ("float32", "float64", "int32", "int64", "bool", "bfloat16")


# ---------------------------------------------------------------------------------------------
# Tolerances


@dataclass(frozen=True)
class Tol:
    """An element passes if its ulp distance is at most ``ulp`` or its absolute error is at most
    ``atol + rtol * |expected|``; NaN must meet NaN and each infinity the same infinity. With
    ``zero_sign`` a -0.0 must meet -0.0 (ops that are exact on every ISA)."""

    ulp: int
    atol: float = 0.0
    rtol: float = 0.0
    zero_sign: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"ulp": self.ulp, "atol": self.atol, "rtol": self.rtol,
                "zero_sign": self.zero_sign}


# IEEE-754 requires these to be exact or correctly rounded, so every ISA gives the same bits:
# + - * / sqrt, abs, neg, max/min, comparisons, selects, clamps, conversions.
EXACT = Tol(0)
# abs/neg/copies/casts move bits: even the sign of a zero must survive.
BITS = Tol(0, zero_sign=True)
# Transcendentals: x86 (and RVV) run SLEEF's 1.0-ulp functions, DEFAULT the C library's
# (<= 1 ulp); two 1-ulp results may be 2 ulp apart, composites (sigmoid = 1/(1+exp(-x)),
# silu, gelu = x*(1+erf)/2, tanh via expm1) add a rounding or two: 4 ulp.
TRANSCENDENTAL = Tol(4)
# sin/cos/atan2/erf near a zero of the function: a 1-ulp error of the argument reduction is many
# ulps of a tiny result; 4 eps absolute is what the vectorization test allows too.
PERIODIC = {"float32": Tol(4, atol=4 * 2.0**-23), "float64": Tol(4, atol=4 * 2.0**-52)}
# erf and gelu in float32: x86's Vectorized<float>::erf is ATen's own polynomial (not SLEEF), with
# an absolute error up to ~4.2e-7 (measured against riscv64's C library); gelu multiplies it by
# x/2 (|x| <= 8 here), where the ulp bound takes over.
ERF32 = Tol(4, atol=1e-6)
GELU = {"float32": Tol(16, atol=2e-6), "float64": Tol(4, atol=4 * 2.0**-52)}
# pow: SLEEF's and the C library's pow are each within 1 ulp, but x**y's result is large for
# large y, so neighbours stay within 4 ulp; specials are exact by C99 on both.
POW = TRANSCENDENTAL
# Reductions: vectorised kernels sum in another order (per lane, then across lanes) than the
# scalar cascade; the difference is bounded by ~log2(n) * eps * sum|x|; inputs are in (-1, 1)
# and n <= 1031, so sum|x| < 1031.
REDUCE = {"float32": Tol(8, atol=2e-4, rtol=1e-6), "float64": Tol(8, atol=1e-12, rtol=1e-15)}
# prod of 33 values in (0.9, 1.1) and the 2-norm: relative, ~n eps.
PROD = {"float32": Tol(64, rtol=4e-6), "float64": Tol(64, rtol=1e-14)}
# softmax: exp of x - max then a sum in another order, then a division: the sum's relative
# error; log_softmax subtracts a log of that sum: absolute.
SOFTMAX = {"float32": Tol(16, atol=1e-7, rtol=2e-6), "float64": Tol(16, atol=1e-16, rtol=1e-14)}
LOG_SOFTMAX = {"float32": Tol(16, atol=2e-6), "float64": Tol(16, atol=4e-15)}
# layer/batch norm: mean and variance over 257 (or 4*33) values in another order, then (x-m)/s:
# outputs ~1, so absolute; batch_norm in eval is (x - m) * (w / sqrt(v + eps)) + b, fused on
# x86 (fmadd) and not in scalar code: a rounding or two.
NORM = {"float32": Tol(16, atol=1e-5, rtol=1e-5), "float64": Tol(16, atol=1e-13, rtol=1e-13)}


def tol_for(op: str, dtype: str, out_dtype: str) -> Tol:
    """The tolerance of one case (see the constants above for why)."""
    if out_dtype in ("bool", "int32", "int64") or dtype in ("int32", "int64", "bool"):
        return EXACT if op not in ("abs", "neg") and not op.startswith("to_") else BITS
    if op in ("abs", "neg") or op.startswith("to_"):
        return BITS
    if op in ("add", "sub", "mul", "div", "sqrt", "relu", "maximum", "minimum", "clamp",
              "where", "max", "min"):
        return EXACT
    if op == "erf" and dtype == "float32":
        return ERF32
    if op in ("sin", "cos", "atan2", "erf"):
        return PERIODIC[dtype]
    if op == "gelu":
        return GELU[dtype]
    if op == "pow":
        return POW
    if op in ("sum", "mean"):
        return REDUCE[dtype]
    if op in ("prod", "norm"):
        return PROD[dtype]
    if op == "softmax":
        return SOFTMAX[dtype]
    if op == "log_softmax":
        return LOG_SOFTMAX[dtype]
    if op in ("layer_norm", "batch_norm"):
        return NORM[dtype]
    return TRANSCENDENTAL


def _special_pairs(dtype: str, pairs: Sequence[tuple[float, float]]) -> tuple[int, ...]:
    """Element indices of (a, b) pairs in a binary op's ``special`` case (every pair, a-major)."""
    s = specials(dtype)
    return tuple(s.index(a) * len(s) + s.index(b) for a, b in pairs)


def known_x86_differences() -> dict[str, tuple[tuple[int, ...], str]]:
    """Elements where the x86 golden itself is wrong, with why: only these elements of these
    cases may differ from it in their NaN/Inf pattern (counted and reported, never silently).
    The capability comparison on the target has no such exceptions."""
    dbl_max = 1.7976931348623157e308
    gelu = specials("float32")
    return {
        "gelu/float32/special": (
            (gelu.index(math.inf), gelu.index(3.4028234663852886e38)),
            "x86's vectorised gelu computes x*0.5*(1+erf(x/sqrt2)) with its own erf: "
            "gelu(+Inf) is NaN and gelu(FLT_MAX) overflows to Inf there; the scalar kernel "
            "gives +Inf and FLT_MAX"),
        "pow/float64/special": (
            _special_pairs("float64", [(dbl_max, 1.0), (-dbl_max, 1.0)]),
            "SLEEF 3.6's pow returns +-Inf for pow(+-DBL_MAX, 1.0) (docs/aten-rvv.md); the C "
            "library returns +-DBL_MAX"),
    }


# ---------------------------------------------------------------------------------------------
# Inputs


def specials(dtype: str) -> list[float]:
    """The special and edge values of a float dtype (each once)."""
    if dtype == "float64":
        edge = [5e-324, -5e-324, 1e-310, 2.2250738585072014e-308, 1.7976931348623157e308,
                -1.7976931348623157e308, 709.5, -745.0]
    else:
        edge = [1e-45, -1e-45, 1e-40, 1.1754943508222875e-38, 3.4028234663852886e38,
                -3.4028234663852886e38, 88.5, -103.5]
    return [math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 1e-7,
            math.pi, *edge]


def case_rng(name: str) -> random.Random:
    """Python's Mersenne Twister, seeded from the case's name: identical on every machine."""
    return random.Random(SEED ^ zlib.crc32(name.encode()))


def uniform(rng: random.Random, n: int, lo: float, hi: float) -> list[float]:
    return [rng.uniform(lo, hi) for _ in range(n)]


def integers(rng: random.Random, n: int, lo: int, hi: int) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(n)]


class Inputs:
    """Draws the values of one case and keeps a digest of everything drawn."""

    def __init__(self, name: str, dtype: str) -> None:
        self.rng = case_rng(name)
        self.dtype = dtype
        self._h = hashlib.sha256()

    def values(self, n: int, lo: float, hi: float) -> list[Any]:
        if self.dtype in INT_DTYPES:
            vals: list[Any] = integers(self.rng, n, int(lo), int(hi))
        elif self.dtype == "bool":
            vals = [self.rng.random() < 0.5 for _ in range(n)]
        else:
            vals = uniform(self.rng, n, lo, hi)
        self._h.update(repr(vals).encode())
        return vals

    def pick(self, pool: Sequence[Any], n: int) -> list[Any]:
        vals = [pool[self.rng.randrange(len(pool))] for _ in range(n)]
        self._h.update(repr(vals).encode())
        return vals

    def mask(self, shape: Sequence[int]) -> Any:
        return self.tensor(self.pick([False, True], math.prod(shape)), shape, "bool")

    def fixed(self, vals: list[Any]) -> list[Any]:
        self._h.update(repr(vals).encode())
        return vals

    def tensor(self, vals: list[Any], shape: Sequence[int] | None = None,
               dtype: str | None = None) -> Any:
        import torch

        t = torch.tensor(vals, dtype=getattr(torch, dtype or self.dtype))
        return t.reshape(tuple(shape)) if shape is not None else t

    def rand(self, shape: Sequence[int], lo: float, hi: float, dtype: str | None = None) -> Any:
        n = math.prod(shape)
        return self.tensor(self.values(n, lo, hi), shape, dtype)

    @property
    def digest(self) -> str:
        return self._h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Case:
    op: str
    dtype: str
    kind: str
    run: Callable[[Inputs], list[Any]]  # the op's results (tensors), flattened and joined
    out_dtype: str = ""

    @property
    def name(self) -> str:
        return f"{self.op}/{self.dtype}/{self.kind}"

    @property
    def tol(self) -> Tol:
        return tol_for(self.op, self.dtype, self.out_dtype or self.dtype)


# name -> (torch function, domain (lo, hi) of the random values)
UNARY: dict[str, tuple[str, float, float]] = {
    "exp": ("torch.exp", -20.0, 20.0), "log": ("torch.log", 1e-3, 100.0),
    "sin": ("torch.sin", -10.0, 10.0), "cos": ("torch.cos", -10.0, 10.0),
    "tanh": ("torch.tanh", -6.0, 6.0), "sigmoid": ("torch.sigmoid", -20.0, 20.0),
    "erf": ("torch.erf", -4.0, 4.0), "sqrt": ("torch.sqrt", 0.0, 100.0),
    "abs": ("torch.abs", -10.0, 10.0), "neg": ("torch.neg", -10.0, 10.0),
    "relu": ("torch.relu", -10.0, 10.0), "gelu": ("F.gelu", -8.0, 8.0),
    "silu": ("F.silu", -8.0, 8.0),
}
UNARY_INT = ("abs", "neg")
BINARY: dict[str, tuple[str, tuple[float, float], tuple[float, float]]] = {
    "add": ("torch.add", (-10, 10), (-10, 10)), "sub": ("torch.sub", (-10, 10), (-10, 10)),
    "mul": ("torch.mul", (-10, 10), (-10, 10)), "div": ("torch.div", (-10, 10), (0.1, 10)),
    "pow": ("torch.pow", (0.1, 5), (-4, 4)), "maximum": ("torch.maximum", (-10, 10), (-10, 10)),
    "minimum": ("torch.minimum", (-10, 10), (-10, 10)),
    "atan2": ("torch.atan2", (-10, 10), (-10, 10)),
}
BINARY_INT = ("add", "sub", "mul", "maximum", "minimum")
COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")
# A few values drawn again and again, so that eq/le/ge see equal pairs (and -0.0 == 0.0).
COMPARE_POOL = [-2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.0]
REDUCTIONS = ("sum", "mean", "prod", "max", "min", "argmax", "norm")


def _fn(path: str) -> Callable[..., Any]:
    """``torch.exp`` or ``F.gelu`` (torch.nn.functional) as the function."""
    import torch
    import torch.nn.functional as F

    mod, name = path.split(".", 1)
    return getattr(F if mod == "F" else torch, name)


def _unary(op: str, dtype: str, kind: str, tails: Sequence[int]) -> Case:
    path, lo, hi = UNARY[op]
    if dtype in INT_DTYPES:
        lo, hi = -1000, 1000

    def run(inp: Inputs) -> list[Any]:
        f = _fn(path)
        if kind == "tails":
            return [f(inp.rand([n], lo, hi)) for n in tails]
        if kind == "strided":
            return [f(inp.rand([33, 17], lo, hi).t()), f(inp.rand([1031], lo, hi)[::3])]
        vals = inp.fixed(specials(dtype))
        return [f(inp.tensor(vals + inp.values(37 - len(vals), lo, hi)))]

    return Case(op, dtype, kind, run)


def _binary(op: str, dtype: str, kind: str, tails: Sequence[int]) -> Case:
    path, (alo, ahi), (blo, bhi) = BINARY[op]
    if dtype in INT_DTYPES:
        # mul of two values of +-1000 fits int32; no overflow (which is not defined the same).
        alo, ahi, blo, bhi = -1000, 1000, -1000, 1000

    def run(inp: Inputs) -> list[Any]:
        f = _fn(path)
        if kind == "tails":
            return [f(inp.rand([n], alo, ahi), inp.rand([n], blo, bhi)) for n in tails]
        if kind == "strided":
            return [f(inp.rand([33, 17], alo, ahi).t(), inp.rand([17, 33], blo, bhi)),
                    f(inp.rand([1031], alo, ahi)[::3], inp.rand([1031], blo, bhi)[1::3])]
        if kind == "broadcast":
            return [f(inp.rand([17, 1], alo, ahi), inp.rand([1, 33], blo, bhi)),
                    f(inp.rand([7, 257], alo, ahi), inp.rand([257], blo, bhi)),
                    f(inp.rand([257], alo, ahi), inp.rand([], blo, bhi))]
        s = inp.fixed(specials(dtype))
        # Every pair of special values, both ways round.
        a = [x for x in s for _ in s]
        b = [y for _ in s for y in s]
        return [f(inp.tensor(a), inp.tensor(b))]

    return Case(op, dtype, kind, run)


def _compare(op: str, dtype: str, kind: str, tails: Sequence[int]) -> Case:
    pool = [-2, -1, 0, 1, 2] if dtype in INT_DTYPES else COMPARE_POOL

    def draw(inp: Inputs, n: int) -> list[Any]:
        return inp.pick(pool, n)

    def run(inp: Inputs) -> list[Any]:
        import torch

        f = getattr(torch, op)
        if kind == "tails":
            return [f(inp.tensor(draw(inp, n)), inp.tensor(draw(inp, n))) for n in tails]
        if kind == "broadcast":
            return [f(inp.tensor(draw(inp, 17), [17, 1]), inp.tensor(draw(inp, 33), [1, 33])),
                    f(inp.tensor(draw(inp, 257)), inp.tensor(draw(inp, 1), []))]
        s = inp.fixed(specials(dtype))
        return [f(inp.tensor([x for x in s for _ in s]), inp.tensor([y for _ in s for y in s]))]

    return Case(op, dtype, kind, run, out_dtype="bool")


def _where(dtype: str, kind: str, tails: Sequence[int]) -> Case:
    lo, hi = (-1000, 1000) if dtype in INT_DTYPES else (-10.0, 10.0)

    def run(inp: Inputs) -> list[Any]:
        import torch

        cond = inp.mask
        if kind == "tails":
            return [torch.where(cond([n]), inp.rand([n], lo, hi), inp.rand([n], lo, hi))
                    for n in tails]
        if kind == "broadcast":
            return [torch.where(cond([17, 1]), inp.rand([1, 33], lo, hi), inp.rand([], lo, hi))]
        s = inp.fixed(specials(dtype))
        n = len(s)
        return [torch.where(cond([n]), inp.tensor(s), inp.tensor(s[::-1]))]

    return Case("where", dtype, kind, run)


def _reduce(op: str, dtype: str, kind: str) -> Case:
    lo, hi = (0.9, 1.1) if op == "prod" else (-1.0, 1.0)
    if dtype in INT_DTYPES:
        lo, hi = -1000, 1000
    out = "int64" if op == "argmax" or (op == "sum" and dtype in INT_DTYPES) else dtype

    def apply(x: Any) -> list[Any]:
        import torch

        if op == "norm":
            f: Callable[..., Any] = torch.linalg.vector_norm
        elif op in ("max", "min"):
            def f(t: Any, dim: int | None = None) -> Any:
                m = getattr(torch, "amax" if op == "max" else "amin")
                return m(t) if dim is None else m(t, dim=dim)
        else:
            f = getattr(torch, op)
        return [f(x, dim=0), f(x, dim=1), f(x)]

    def run(inp: Inputs) -> list[Any]:
        if kind == "rows":
            return apply(inp.rand([17, 33], lo, hi)) + apply(inp.rand([4, 1031], lo, hi))
        if kind == "cols":
            return apply(inp.rand([33, 17], lo, hi).t()) + apply(inp.rand([257, 7], lo, hi).t())
        # special: NaN, +Inf, -Inf and Inf-Inf in separate rows of a random matrix.
        x = inp.values(7 * 33, lo, hi)
        x[1 * 33 + 5] = math.nan
        x[2 * 33 + 0] = math.inf
        x[3 * 33 + 32] = -math.inf
        x[4 * 33 + 7], x[4 * 33 + 8] = math.inf, -math.inf
        x[5 * 33 + 9] = -0.0
        inp.fixed(x)
        return apply(inp.tensor(x, [7, 33]))

    return Case(op, dtype, kind, run, out_dtype=out)


def _softmax(op: str, dtype: str, kind: str) -> Case:
    def run(inp: Inputs) -> list[Any]:
        import torch

        f = getattr(torch, op)
        x = inp.rand([7, 257], -8.0, 8.0) if kind == "rows" else inp.rand([33, 17], -8, 8).t()
        return [f(x, dim=-1), f(x, dim=0)]

    return Case(op, dtype, kind, run)


def _norm(op: str, dtype: str, kind: str) -> Case:
    def run(inp: Inputs) -> list[Any]:
        import torch.nn.functional as F

        if op == "layer_norm":
            x = inp.rand([7, 257], -3.0, 3.0) if kind == "rows" else inp.rand(
                [257, 7], -3.0, 3.0).t()
            w, b = inp.rand([x.shape[-1]], 0.5, 1.5), inp.rand([x.shape[-1]], -0.5, 0.5)
            return [F.layer_norm(x, [x.shape[-1]], w, b, eps=1e-5)]
        x = inp.rand([4, 17, 33], -3.0, 3.0) if kind == "rows" else inp.rand(
            [4, 33, 17], -3.0, 3.0).transpose(1, 2)
        mean, var = inp.rand([17], -1.0, 1.0), inp.rand([17], 0.5, 2.0)
        w, b = inp.rand([17], 0.5, 1.5), inp.rand([17], -0.5, 0.5)
        return [F.batch_norm(x, mean, var, w, b, training=False, eps=1e-5)]

    return Case(op, dtype, kind, run)


def _clamp(dtype: str, kind: str, tails: Sequence[int]) -> Case:
    lo, hi = (-1000, 1000) if dtype in INT_DTYPES else (-10.0, 10.0)
    cmin, cmax = (-300, 450) if dtype in INT_DTYPES else (-3.5, 4.25)

    def run(inp: Inputs) -> list[Any]:
        import torch

        if kind == "tails":
            return [torch.clamp(inp.rand([n], lo, hi), cmin, cmax) for n in tails]
        if kind == "broadcast":  # tensor bounds, broadcast against the input
            return [torch.clamp(inp.rand([17, 33], lo, hi), inp.rand([17, 1], lo, 0),
                                inp.rand([1, 33], 0, hi))]
        s = inp.fixed(specials(dtype))
        return [torch.clamp(inp.tensor(s), cmin, cmax)]

    return Case("clamp", dtype, kind, run)


def _cast(src: str, dst: str, kind: str) -> Case:
    # Float to int only from finite values in range: NaN, Inf and overflow convert differently
    # per ISA (undefined behaviour in C++), that is no parity question.
    lo, hi = (-1000.75, 1000.75)

    def run(inp: Inputs) -> list[Any]:
        import torch

        to = getattr(torch, dst)
        if kind == "tails":
            return [inp.rand([n], lo, hi).to(to) for n in (17, 1031)]
        if kind == "strided":
            x = inp.rand([33, 17], lo, hi).t()
            return [x.to(to), torch.empty(17, 33, dtype=to).copy_(x)]
        # Floats only: every special value, plus values that round differently in bfloat16.
        s = inp.fixed([*specials(src), 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-9, 1.0 + 2.0**-9,
                       -(1.0 + 2.0**-8 + 2.0**-20), 65504.0, 1e-39])
        return [inp.tensor(s).to(to)]

    return Case(f"to_{dst}", src, kind, run, out_dtype=dst)


def select(table: Sequence[Case], only: str) -> list[Case]:
    """The cases whose name contains one of the comma-separated words of ``only`` (all if empty).
    """
    words = [w for w in only.split(",") if w]
    return [c for c in table if not words or any(w in c.name for w in words)]


def cases(full: bool = False) -> list[Case]:
    """The op x dtype x shape table (``full``: every tail length of :data:`FULL_TAILS`)."""
    tails = FULL_TAILS if full else TAILS
    out: list[Case] = []
    for dt in FLOAT_DTYPES:
        for op in UNARY:
            out += [_unary(op, dt, k, tails) for k in ("tails", "strided", "special")]
        for op in BINARY:
            out += [_binary(op, dt, k, tails) for k in ("tails", "strided", "broadcast",
                                                        "special")]
        for op in COMPARE:
            out += [_compare(op, dt, k, tails) for k in ("tails", "broadcast", "special")]
        out += [_where(dt, k, tails) for k in ("tails", "broadcast", "special")]
        for op in REDUCTIONS:
            out += [_reduce(op, dt, k) for k in ("rows", "cols")]
        out += [_reduce(op, dt, "special") for op in ("sum", "max", "min")]
        for op in ("softmax", "log_softmax", "layer_norm", "batch_norm"):
            out += [(_softmax if "softmax" in op else _norm)(op, dt, k) for k in ("rows", "cols")]
        out += [_clamp(dt, k, tails) for k in ("tails", "broadcast", "special")]
    for dt in INT_DTYPES:
        out += [_unary(op, dt, "tails", tails) for op in UNARY_INT]
        for op in BINARY_INT:
            out += [_binary(op, dt, k, tails) for k in ("tails", "broadcast")]
        out += [_compare(op, dt, "tails", tails) for op in ("eq", "lt", "ge")]
        out += [_where(dt, "tails", tails)]
        out += [_reduce(op, dt, "rows") for op in ("sum", "max", "min", "argmax")]
        out += [_clamp(dt, k, tails) for k in ("tails", "broadcast")]
    for src in CAST_DTYPES:
        for dst in CAST_DTYPES:
            if src == dst:
                continue
            out.append(_cast(src, dst, "tails"))
            if full or src == "float32":
                out.append(_cast(src, dst, "strided"))
            if src in ("float32", "float64", "bfloat16") and dst in (
                    "float32", "float64", "bfloat16", "bool"):
                out.append(_cast(src, dst, "special"))
    if full:
        for dt in FLOAT_DTYPES:
            out += [_reduce(op, dt, "special") for op in ("mean", "prod", "argmax", "norm")]
    return out


# ---------------------------------------------------------------------------------------------
# Running and comparing (plain Python: no kernel under test is used to judge itself)


def evaluate(case: Case) -> dict[str, Any]:
    """Run one case: its output as ``{"dtype", "shape", "data", "digest"}`` (data flattened)."""
    inp = Inputs(case.name, case.dtype)
    outs = case.run(inp)
    dtype = str(outs[0].dtype).replace("torch.", "")
    data: list[Any] = []
    shapes = []
    for t in outs:
        shapes.append(list(t.shape))
        data += t.reshape(-1).tolist() if t.dim() else [t.item()]
    return {"dtype": dtype, "shape": shapes, "data": data, "digest": inp.digest}


def _ordered(bits: int, sign_bit: int) -> int:
    """IEEE bits as an integer whose order is the order of the floats (and -0.0 == +0.0)."""
    return bits if bits < sign_bit else sign_bit - bits


def ulp_distance(a: float, e: float, dtype: str) -> int:
    """Number of representable ``dtype`` values between two finite values."""
    if dtype == "float64":
        ia = struct.unpack("<Q", struct.pack("<d", a))[0]
        ie = struct.unpack("<Q", struct.pack("<d", e))[0]
        sign = 1 << 63
    else:
        ia = struct.unpack("<I", struct.pack("<f", a))[0]
        ie = struct.unpack("<I", struct.pack("<f", e))[0]
        sign = 1 << 31
        if dtype == "bfloat16":  # the upper half of a float32 (values here are exact)
            ia, ie, sign = ia >> 16, ie >> 16, 1 << 15
    return abs(_ordered(ia, sign) - _ordered(ie, sign))


def _pattern(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return ""


def compare_values(actual: dict[str, Any], expected: dict[str, Any], tol: Tol,
                   known: Sequence[int] = ()) -> dict[str, Any]:
    """Compare two :func:`evaluate` outputs element by element.

    Returns ``ok``, ``max_abs_err``, ``max_ulp``, ``mismatches`` (elements out of tolerance),
    ``nan_inf_agree`` (the NaN/+Inf/-Inf pattern is the same), ``worst_index``, ``detail`` and
    ``known_differences``: elements of ``known`` (indices where the reference is known to be
    wrong) whose NaN/Inf pattern differs; they do not fail the comparison.
    """
    rep: dict[str, Any] = {"ok": False, "max_abs_err": 0.0, "max_ulp": 0, "mismatches": 0,
                           "nan_inf_agree": True, "worst_index": -1, "detail": "",
                           "known_differences": 0}
    for key in ("dtype", "shape"):
        if actual.get(key) != expected.get(key):
            rep.update(max_abs_err=math.inf, max_ulp=None, nan_inf_agree=False,
                       detail=f"{key} {actual.get(key)} != expected {expected.get(key)}")
            return rep
    if actual.get("digest") != expected.get("digest"):
        rep.update(max_abs_err=math.inf, max_ulp=None,
                   detail="inputs differ from the reference's (digest "
                          f"{actual.get('digest')} != {expected.get('digest')})")
        return rep
    a_data, e_data = actual["data"], expected["data"]
    if len(a_data) != len(e_data):
        rep.update(max_abs_err=math.inf, detail=f"{len(a_data)} values != {len(e_data)}")
        return rep
    dtype = actual["dtype"]
    is_float = dtype in ("float32", "float64", "bfloat16", "float16")
    worst_excess = -math.inf
    first_bad = ""
    for i, (a, e) in enumerate(zip(a_data, e_data, strict=True)):
        if a == e and (not tol.zero_sign or not is_float or a != 0.0
                       or math.copysign(1.0, a) == math.copysign(1.0, e)):
            continue  # the common case: the same value (NaN != NaN falls through)
        if not is_float:
            err = abs(float(a) - float(e))
            rep["max_abs_err"] = max(rep["max_abs_err"], err)
            rep["max_ulp"] = max(rep["max_ulp"], int(err))
            bad = True
        else:
            pa, pe = _pattern(a), _pattern(e)
            if pa or pe:
                if pa == pe:
                    continue  # NaN meets NaN (any payload or sign)
                rep["nan_inf_agree"] = False
                if i in known:
                    rep["known_differences"] += 1
                    continue
                rep["max_abs_err"] = math.inf
                bad = True
                err = math.inf
            elif a == e:  # +0.0 vs -0.0 where the sign matters
                err, bad = 0.0, True
            else:
                err = abs(a - e)
                ulps = ulp_distance(a, e, dtype)
                rep["max_abs_err"] = max(rep["max_abs_err"], err)
                rep["max_ulp"] = max(rep["max_ulp"], ulps)
                bad = ulps > tol.ulp and err > tol.atol + tol.rtol * abs(e)
        if bad:
            rep["mismatches"] += 1
            excess = err if err == math.inf else err - tol.atol - tol.rtol * abs(e)
            if excess > worst_excess or rep["worst_index"] < 0:
                worst_excess = excess
                rep["worst_index"] = i
                first_bad = f"element {i}: {a!r} vs {e!r}"
    rep["ok"] = rep["mismatches"] == 0
    if not rep["ok"]:
        rep["detail"] = (f"{rep['mismatches']} of {len(a_data)} elements out of tolerance, "
                         f"worst {first_bad}")
    return rep


def compute_table(table: Sequence[Case]) -> dict[str, dict[str, Any]]:
    """Every case's output (an exception becomes ``{"error": ...}``: one broken op does not hide
    the others)."""
    out: dict[str, dict[str, Any]] = {}
    for case in table:
        try:
            out[case.name] = evaluate(case)
        except Exception as exc:
            out[case.name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def compare_tables(res: Result, table: Sequence[Case], actual: dict[str, dict[str, Any]],
                   reference: dict[str, dict[str, Any]], *, prefix: str, reference_name: str,
                   capability: str, known: dict[str, tuple[tuple[int, ...], str]] | None = None,
                   ) -> dict[str, Any]:
    """One check per case of ``table``: ``actual`` against ``reference`` (``known``: elements
    where the reference is known to be wrong, see :func:`known_x86_differences`)."""
    worst: dict[str, Any] = {"checks": 0, "failed": 0}
    for case in table:
        a = actual.get(case.name)
        e = reference.get(case.name)
        tol = case.tol
        indices, why = (known or {}).get(case.name, ((), ""))
        if a is None or e is None or "error" in a or "error" in e:
            why = ("missing from the reference" if e is None else
                   "missing" if a is None else a.get("error") or f"reference: {e.get('error')}")
            rep: dict[str, Any] = {"ok": False, "max_abs_err": math.inf, "max_ulp": None,
                                   "mismatches": None, "nan_inf_agree": False, "detail": why}
        else:
            rep = compare_values(a, e, tol, indices)
        value = {k: rep.get(k) for k in ("max_abs_err", "max_ulp", "mismatches",
                                         "nan_inf_agree")}
        detail = rep["detail"]
        if rep.get("known_differences"):
            value["known_differences"] = rep["known_differences"]
            detail = "; ".join(x for x in (detail, f"{rep['known_differences']} element(s) "
                                           f"differ where the reference is known wrong: {why}")
                               if x)
        res.check(f"{prefix}:{case.name}", rep["ok"], value=value, expected=reference_name,
                  tol=tol.to_json(), detail=detail)
        res.checks[-1].update(op=case.op, dtype=case.dtype, shape=case.kind,
                              capability=capability, reference=reference_name)
        worst["checks"] += 1
        worst["failed"] += not rep["ok"]
    return worst


def cpu_capability() -> str:
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception as exc:  # torch < 2.1 has no get_cpu_capability
        return f"unknown ({type(exc).__name__})"


def is_default(capability: str) -> bool:
    """ATen's scalar capability (common.normalise_capability: torch 2.6's ``NO AVX`` too)."""
    return normalise_capability(capability) == "DEFAULT"


def body(args: Any, res: Result) -> None:
    cap = cpu_capability()
    res.info["cpu_capability"] = cap
    res.info["aten_cpu_capability_env"] = os.environ.get("ATEN_CPU_CAPABILITY")
    res.info["full"] = bool(args.full)
    table = select(cases(args.full), args.only)
    res.figures["cases"] = len(table)
    if not table:
        res.check("table", False, detail=f"--only {args.only!r} selects no case")
        return
    golden_path = os.path.join(args.data, GOLDEN)
    with res.timed("ops_s"):
        outputs = compute_table(table)
    if args.role == "host":
        broken = {k: v["error"] for k, v in outputs.items() if "error" in v}
        res.check("host_table", not broken, value=len(outputs),
                  detail="; ".join(f"{k}: {v}" for k, v in list(broken.items())[:5]))
        import torch

        write_json(golden_path, {"seed": SEED, "torch_version": torch.__version__,
                                 "capability": cap, "full": bool(args.full), "cases": outputs})
        return
    if args.against:
        # The forced-DEFAULT process: the chosen capability's values are the reference.
        with open(args.against, encoding="utf-8") as fh:
            chosen = json.load(fh)
        res.check("capability_forced_default", is_default(cap), value=cap, expected="DEFAULT",
                  detail="ATEN_CPU_CAPABILITY=default did not give the DEFAULT kernels")
        res.info["compared_with"] = chosen.get("capability")
        with res.timed("compare_s"):
            res.figures["capability"] = compare_tables(
                res, table, outputs, chosen["cases"], prefix="capability",
                reference_name=f"{chosen.get('capability')} (same machine)",
                capability="DEFAULT")
        return
    with res.timed("load_golden_s"), open(golden_path, encoding="utf-8") as fh:
        golden = json.load(fh)
    res.info["golden_torch_version"] = golden.get("torch_version")
    res.info["golden_capability"] = golden.get("capability")
    if bool(golden.get("full")) != bool(args.full):
        res.check("golden_table", False, value=golden.get("full"), expected=bool(args.full),
                  detail="the golden file was made for another table (--full)")
    with res.timed("compare_s"):
        res.figures["golden"] = compare_tables(
            res, table, outputs, golden["cases"], prefix="golden",
            reference_name=f"x86 {golden.get('capability')}", capability=cap,
            known=known_x86_differences())
    if args.outputs:
        write_json(args.outputs, {"capability": cap, "full": bool(args.full), "cases": outputs})
    if is_default(cap) or cap.startswith("unknown"):
        reason = (f"torch chose {cap}: this CPU and build offer no CPU capability but DEFAULT, "
                  "so there is nothing to compare DEFAULT with")
        if args.require_capability_parity:
            res.check("capability_parity", False, value=cap, detail=reason)
        else:
            res.info["capability_parity"] = {"status": "skipped", "reason": reason}
            res.info["skipped_checks"] = [{"name": "capability_parity", "reason": reason}]
    else:
        res.info["capability_parity"] = {"status": "needs a DEFAULT run", "chosen": cap}


def main(argv: list[str] | None = None) -> int:
    p = base_parser("ops", __doc__ or "")
    p.add_argument("--full", action="store_true",
                   help=f"the larger table (tail lengths {','.join(map(str, FULL_TAILS))})")
    p.add_argument("--outputs", default="",
                   help="target: also write this process's values here (for --against)")
    p.add_argument("--against", default="",
                   help="target: compare with the values of another capability's run (written "
                        "by --outputs) instead of the golden; run with ATEN_CPU_CAPABILITY=default")
    p.add_argument("--only", default="",
                   help="comma list of words: run the cases whose name (op/dtype/kind) has one")
    p.add_argument("--require-capability-parity", action="store_true",
                   help="no second capability to compare with is a failed check, not a skip")
    return run_suite("ops", body, p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
