"""Smoke suite: does torch import, what was it built with, and does it compute what x86 computes?

Role ``host`` (the x86 reference) draws every input from fixed seeds, runs each op and writes
``smoke_golden.json``: inputs, outputs and the tolerance of each op. Role ``target`` reads the same
inputs, runs the same ops and compares. Inputs travel in the golden file instead of being redrawn
on the target, so a difference in an op is never confused with a difference in the RNG (which is
checked on its own, ``rng_randn``).

Golden files are JSON so they can be read and edited without torch (the host runner does both).
"""

from __future__ import annotations

import ctypes
import io
import json
import math
import os
import re
import warnings
from collections.abc import Callable
from typing import Any

from .common import (
    Result,
    base_parser,
    compare_entry,
    normalise_capability,
    run_suite,
    tensor_from_json,
    tensor_to_json,
)

SEED = 20250601

# name -> (rtol, atol, why). Tolerances are for an fp32/fp64 op computed by a different kernel
# (x86 AVX2 vs scalar/RVV/NEON) on inputs of magnitude ~1; reductions of length K accumulate
# rounding error ~ sqrt(K) * eps, which is what the fp32 matmul bounds allow for.
TOL: dict[str, tuple[float, float]] = {
    # Same mt19937 stream everywhere; the Box-Muller transform is vectorised per ISA (x86 AVX2
    # log/cos vs scalar), so values differ by a few ulp (1.7e-6 seen riscv64 vs x86).
    "rng_randn": (1e-5, 1e-5),
    "matmul_f32": (1e-4, 1e-4),
    "matmul_f64": (1e-10, 1e-11),
    "addmm_f32": (1e-4, 1e-4),
    "bmm_f32": (1e-4, 1e-4),
    "matmul_bf16": (2e-2, 5e-2),
    "linear_relu": (1e-4, 1e-4),
    "conv2d": (1e-4, 1e-4),
    "conv2d_stride2_groups": (1e-4, 1e-4),
    "conv1d": (1e-4, 1e-4),
    "max_pool2d": (0.0, 0.0),
    "avg_pool2d": (1e-6, 1e-6),
    "softmax": (1e-5, 1e-7),
    "log_softmax": (1e-5, 1e-5),
    "layer_norm": (1e-4, 1e-5),
    "batch_norm_train": (1e-4, 1e-5),
    "unary_exp": (1e-5, 1e-7),
    "unary_log": (1e-5, 1e-6),
    "unary_tanh": (1e-5, 1e-6),
    "unary_sigmoid": (1e-5, 1e-7),
    "unary_erf": (1e-5, 1e-6),
    "unary_sin": (1e-5, 1e-6),
    "unary_gelu": (1e-5, 1e-6),
    "unary_silu": (1e-5, 1e-6),
    "pow_sqrt_f64": (1e-12, 1e-12),
    "reduce_sum_mean": (1e-5, 1e-4),
    "reduce_var_std": (1e-5, 1e-5),
    "cumsum": (1e-5, 1e-4),
    "sort_values": (0.0, 0.0),
    "sort_stable_indices": (0.0, 0.0),
    "topk": (0.0, 0.0),
    "gather_scatter_add": (1e-6, 1e-6),
    "embedding_bag": (1e-5, 1e-6),
    "fft_rfft": (1e-4, 1e-4),
    "fft_complex": (1e-4, 1e-4),
    "linalg_solve_f64": (1e-9, 1e-10),
    "linalg_cholesky_f64": (1e-10, 1e-11),
    "linalg_svdvals_f64": (1e-10, 1e-10),
    "linalg_eigvalsh_f64": (1e-10, 1e-10),
    "autograd_mlp_grads": (1e-4, 1e-5),
    "gru_cell": (1e-5, 1e-6),
    "int_arith": (0.0, 0.0),
    "quantize_roundtrip": (0.0, 1e-6),
    # dtype coverage: (x + x) * x - 1 and its sum, for every dtype; low precision gets its ulp.
    "dtype_float32": (1e-6, 1e-6),
    "dtype_float64": (1e-12, 1e-12),
    "dtype_float16": (2e-3, 2e-3),
    "dtype_bfloat16": (1e-2, 1e-2),
    "dtype_complex64": (1e-6, 1e-6),
    "dtype_complex128": (1e-12, 1e-12),
    "dtype_int8": (0.0, 0.0),
    "dtype_uint8": (0.0, 0.0),
    "dtype_int16": (0.0, 0.0),
    "dtype_int32": (0.0, 0.0),
    "dtype_int64": (0.0, 0.0),
    "dtype_bool": (0.0, 0.0),
}


def _make_inputs() -> dict[str, dict[str, Any]]:
    """Every op's inputs, drawn from one seeded generator (host role only)."""
    import torch

    g = torch.Generator().manual_seed(SEED)

    def randn(*shape: int, dtype: Any = None) -> Any:
        return torch.randn(*shape, generator=g, dtype=dtype or torch.float32)

    spd = randn(24, 24, dtype=torch.float64)
    spd = spd @ spd.T + 24 * torch.eye(24, dtype=torch.float64)
    base = torch.arange(-6, 7, dtype=torch.float64).reshape(13)
    ins: dict[str, dict[str, Any]] = {
        "matmul_f32": {"a": randn(64, 128), "b": randn(128, 32)},
        "matmul_f64": {"a": randn(48, 64, dtype=torch.float64),
                       "b": randn(64, 32, dtype=torch.float64)},
        "addmm_f32": {"c": randn(32, 48), "a": randn(32, 80), "b": randn(80, 48)},
        "bmm_f32": {"a": randn(4, 16, 40), "b": randn(4, 40, 24)},
        "matmul_bf16": {"a": randn(32, 64), "b": randn(64, 32)},
        "linear_relu": {"x": randn(64, 50), "w": randn(30, 50), "b": randn(30)},
        "conv2d": {"x": randn(2, 3, 16, 16), "w": randn(8, 3, 3, 3), "b": randn(8)},
        "conv2d_stride2_groups": {"x": randn(2, 4, 15, 15), "w": randn(8, 2, 3, 3)},
        "conv1d": {"x": randn(3, 5, 40), "w": randn(6, 5, 7)},
        "max_pool2d": {"x": randn(2, 3, 12, 12)},
        "avg_pool2d": {"x": randn(2, 3, 12, 12)},
        "softmax": {"x": 4 * randn(16, 100)},
        "log_softmax": {"x": 4 * randn(16, 100)},
        "layer_norm": {"x": randn(32, 96), "w": randn(96), "b": randn(96)},
        "batch_norm_train": {"x": randn(16, 6, 5, 5), "w": randn(6), "b": randn(6)},
        "unary_exp": {"x": 4 * randn(1024)},
        "unary_log": {"x": randn(1024).abs() + 1e-3},
        "unary_tanh": {"x": 3 * randn(1024)},
        "unary_sigmoid": {"x": 6 * randn(1024)},
        "unary_erf": {"x": 2 * randn(1024)},
        "unary_sin": {"x": 10 * randn(1024)},
        "unary_gelu": {"x": 3 * randn(1024)},
        "unary_silu": {"x": 3 * randn(1024)},
        "pow_sqrt_f64": {"x": randn(1000, dtype=torch.float64).abs()},
        "reduce_sum_mean": {"x": randn(20_000)},
        "reduce_var_std": {"x": randn(100, 65)},
        "cumsum": {"x": randn(2000)},
        "sort_values": {"x": randn(2000)},
        "sort_stable_indices": {"x": torch.randint(0, 50, (2000,), generator=g)},
        "topk": {"x": randn(8, 100)},
        "gather_scatter_add": {"src": randn(64, 16),
                               "idx": torch.randint(0, 10, (64, 16), generator=g)},
        "embedding_bag": {"w": randn(100, 12), "idx": torch.randint(0, 100, (60,), generator=g),
                          "off": torch.tensor([0, 7, 20, 33, 41, 59])},
        "fft_rfft": {"x": randn(4, 256)},
        "fft_complex": {"x": torch.complex(randn(3, 128), randn(3, 128))},
        "linalg_solve_f64": {"a": spd, "b": randn(24, 3, dtype=torch.float64)},
        "linalg_cholesky_f64": {"a": spd},
        "linalg_svdvals_f64": {"a": randn(30, 20, dtype=torch.float64)},
        "linalg_eigvalsh_f64": {"a": spd},
        "autograd_mlp_grads": {"x": randn(32, 10), "y": randn(32, 1), "w1": 0.3 * randn(10, 20),
                               "w2": 0.3 * randn(20, 1)},
        "gru_cell": {"x": randn(5, 8), "h": randn(5, 16), "w_ih": 0.2 * randn(48, 8),
                     "w_hh": 0.2 * randn(48, 16), "b_ih": randn(48), "b_hh": randn(48)},
        "int_arith": {"a": torch.randint(-1000, 1000, (500,), generator=g),
                      "b": torch.randint(1, 100, (500,), generator=g)},
        "quantize_roundtrip": {"x": randn(256)},
    }
    for dt in ("float32", "float64", "float16", "bfloat16", "complex64", "complex128", "int8",
               "uint8", "int16", "int32", "int64", "bool"):
        ins[f"dtype_{dt}"] = {"x": base}
    return ins


def _ops() -> dict[str, Callable[[dict[str, Any]], Any]]:
    import torch
    import torch.nn.functional as F

    def dtype_op(name: str) -> Callable[[dict[str, Any]], Any]:
        dt = getattr(torch, name)

        def op(i: dict[str, Any]) -> Any:
            x = i["x"]
            if dt == torch.bool:
                b = x > 0
                return torch.stack([b & ~b.flip(0), b | b.flip(0), b ^ b.flip(0)]).to(torch.bool)
            if dt == torch.uint8:
                x = x.abs()
            x = x.to(dt)
            y = (x + x) * x - x
            return torch.cat([y.flatten(), y.sum().reshape(1).to(y.dtype)])

        return op

    def autograd_mlp(i: dict[str, Any]) -> Any:
        w1 = i["w1"].clone().requires_grad_(True)
        w2 = i["w2"].clone().requires_grad_(True)
        loss = ((torch.tanh(i["x"] @ w1) @ w2 - i["y"]) ** 2).mean()
        loss.backward()
        return torch.cat([loss.detach().reshape(1), w1.grad.flatten(), w2.grad.flatten()])

    def quantize(i: dict[str, Any]) -> Any:
        # Deprecated in newer torch (a UserWarning), still the quantized engine's entry point.
        warnings.simplefilter("ignore", UserWarning)
        q = torch.quantize_per_tensor(i["x"], scale=0.05, zero_point=3, dtype=torch.quint8)
        return q.dequantize()

    ops: dict[str, Callable[[dict[str, Any]], Any]] = {
        "matmul_f32": lambda i: i["a"] @ i["b"],
        "matmul_f64": lambda i: i["a"] @ i["b"],
        "addmm_f32": lambda i: torch.addmm(i["c"], i["a"], i["b"], beta=0.5, alpha=2.0),
        "bmm_f32": lambda i: torch.bmm(i["a"], i["b"]),
        "matmul_bf16": lambda i: (i["a"].bfloat16() @ i["b"].bfloat16()).float(),
        "linear_relu": lambda i: F.relu(F.linear(i["x"], i["w"], i["b"])),
        "conv2d": lambda i: F.conv2d(i["x"], i["w"], i["b"], padding=1),
        "conv2d_stride2_groups": lambda i: F.conv2d(i["x"], i["w"], stride=2, groups=2),
        "conv1d": lambda i: F.conv1d(i["x"], i["w"], padding=3, dilation=1),
        "max_pool2d": lambda i: F.max_pool2d(i["x"], 3, stride=2),
        "avg_pool2d": lambda i: F.avg_pool2d(i["x"], 2),
        "softmax": lambda i: torch.softmax(i["x"], dim=-1),
        "log_softmax": lambda i: torch.log_softmax(i["x"], dim=-1),
        "layer_norm": lambda i: F.layer_norm(i["x"], (96,), i["w"], i["b"]),
        "batch_norm_train": lambda i: F.batch_norm(i["x"], None, None, i["w"], i["b"],
                                                   training=True),
        "unary_exp": lambda i: torch.exp(i["x"]),
        "unary_log": lambda i: torch.log(i["x"]),
        "unary_tanh": lambda i: torch.tanh(i["x"]),
        "unary_sigmoid": lambda i: torch.sigmoid(i["x"]),
        "unary_erf": lambda i: torch.erf(i["x"]),
        "unary_sin": lambda i: torch.sin(i["x"]),
        "unary_gelu": lambda i: F.gelu(i["x"]),
        "unary_silu": lambda i: F.silu(i["x"]),
        "pow_sqrt_f64": lambda i: torch.cat([i["x"].sqrt(), i["x"].pow(2.5)]),
        "reduce_sum_mean": lambda i: torch.stack([i["x"].sum(), i["x"].mean() * 1e4]),
        "reduce_var_std": lambda i: torch.cat([i["x"].var(dim=0), i["x"].std(dim=1)]),
        "cumsum": lambda i: torch.cumsum(i["x"], 0),
        "sort_values": lambda i: torch.sort(i["x"]).values,
        "sort_stable_indices": lambda i: torch.sort(i["x"], stable=True).indices,
        "topk": lambda i: torch.topk(i["x"], 7, dim=1).values,
        "gather_scatter_add": lambda i: torch.zeros(10, 16).scatter_add(0, i["idx"], i["src"]),
        "embedding_bag": lambda i: F.embedding_bag(i["idx"], i["w"], i["off"], mode="mean"),
        "fft_rfft": lambda i: torch.fft.rfft(i["x"]),
        "fft_complex": lambda i: torch.fft.ifft(torch.fft.fft(i["x"]) * 0.5 + 1.0),
        "linalg_solve_f64": lambda i: torch.linalg.solve(i["a"], i["b"]),
        "linalg_cholesky_f64": lambda i: torch.linalg.cholesky(i["a"]),
        "linalg_svdvals_f64": lambda i: torch.linalg.svdvals(i["a"]),
        "linalg_eigvalsh_f64": lambda i: torch.linalg.eigvalsh(i["a"]),
        "autograd_mlp_grads": autograd_mlp,
        "gru_cell": lambda i: torch.gru_cell(i["x"], i["h"], i["w_ih"], i["w_hh"], i["b_ih"],
                                             i["b_hh"]),
        "int_arith": lambda i: torch.cat([i["a"] * i["b"], i["a"] // i["b"], i["a"] % i["b"],
                                          i["a"] & 0xFF, i["a"] >> 2]),
        "quantize_roundtrip": quantize,
    }
    for dt in ("float32", "float64", "float16", "bfloat16", "complex64", "complex128", "int8",
               "uint8", "int16", "int32", "int64", "bool"):
        ops[f"dtype_{dt}"] = dtype_op(dt)
    return ops


def _rng_sample() -> Any:
    import torch

    return torch.randn(1000, generator=torch.Generator().manual_seed(SEED))


# ---------------------------------------------------------------------------------------------
# Build information and the BLAS kernel

FLAG_RE = re.compile(r"(\w+)=([^,]*)")


def build_info() -> dict[str, Any]:
    import torch

    show = torch.__config__.show()
    flags = {k: v.strip() for k, v in FLAG_RE.findall(show.split("Build settings:", 1)[-1])}
    flags.pop("CXX_FLAGS", None)
    info: dict[str, Any] = {
        "config_show": show,
        "parallel_info": torch.__config__.parallel_info(),
        "build_flags": flags,
        "cpu_capability": _safe(lambda: torch.backends.cpu.get_cpu_capability()),
        "num_threads": torch.get_num_threads(),
        "has_lapack": bool(getattr(torch._C, "has_lapack", False)),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "openmp": torch.backends.openmp.is_available(),
        "quantized_engines": _safe(lambda: list(torch.backends.quantized.supported_engines)),
        "distributed": _safe(lambda: __import__("torch.distributed").distributed.is_available()),
        "gloo": _safe(lambda: __import__("torch.distributed").distributed.is_gloo_available()),
        "fft": hasattr(torch, "fft"),
    }
    return info


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"


class _DlPhdrInfo(ctypes.Structure):
    _fields_ = [("dlpi_addr", ctypes.c_void_p), ("dlpi_name", ctypes.c_char_p),
                ("dlpi_phdr", ctypes.c_void_p), ("dlpi_phnum", ctypes.c_uint16)]


def mapped_libraries() -> list[str]:
    """Paths of the shared libraries loaded into this process.

    Asks the dynamic linker (``dl_iterate_phdr``): a chroot without /proc (binfmt mode) has no
    ``/proc/self/maps``, and QEMU then shows an empty one. /proc/self/maps is the fallback.
    """
    paths: list[str] = []
    try:
        callback_t = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_DlPhdrInfo), ctypes.c_size_t,
                                      ctypes.c_void_p)

        def visit(info: Any, size: int, data: Any) -> int:
            name = info.contents.dlpi_name
            if name:
                path = os.path.realpath(name.decode(errors="replace"))
                if path not in paths:
                    paths.append(path)
            return 0

        ctypes.CDLL(None).dl_iterate_phdr(callback_t(visit), None)
    except (OSError, AttributeError):
        pass
    if paths:
        return [p for p in paths if ".so" in os.path.basename(p)]
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) == 6:
                    path = parts[5].strip()
                    if ".so" in os.path.basename(path) and path not in paths:
                        paths.append(path)
    except OSError:
        pass
    return paths


def blas_libraries() -> list[str]:
    """The BLAS libraries among them (after a GEMM has run)."""
    return [p for p in mapped_libraries()
            if "blas" in os.path.basename(p) or "openblas" in p]


def blas_kernel() -> dict[str, Any]:
    """Ask the loaded OpenBLAS which kernel (core) it picked, via ``openblas_get_corename``."""
    out: dict[str, Any] = {"libraries": blas_libraries(), "vendor": "unknown"}
    for path in out["libraries"]:
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            out.setdefault("errors", []).append(f"{path}: {exc}")
            continue
        if hasattr(lib, "openblas_get_corename"):
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
            out["vendor"] = "openblas"
            out["library"] = path
            out["corename"] = lib.openblas_get_corename().decode()
            out["config"] = lib.openblas_get_config().decode()
            if hasattr(lib, "openblas_get_num_threads"):
                out["num_threads"] = lib.openblas_get_num_threads()
            return out
    if out["libraries"]:
        out["vendor"] = "reference-or-other"
    return out


# ---------------------------------------------------------------------------------------------


def compute(ops: dict[str, Callable[[dict[str, Any]], Any]],
            inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: ops[name](inputs[name]) for name in inputs}


def body(args: Any, res: Result) -> None:
    import torch

    golden_path = os.path.join(args.data, "smoke_golden.json")
    res.info.update(build_info())
    # torch imported (run_suite timed it); that its compiled core is the one next to its Python
    # files and built for this interpreter (a wheel's _C with another SOABI, or a venv's torch
    # Python over the system's _C, imports only by accident) is a check that can fail.
    ext = torch_c_extension(torch)
    res.info["torch_c"] = ext
    res.check("torch_c_extension", ext["ok"], value=ext["file"], expected=ext["expected"],
              detail=ext["detail"])
    if args.expect_version:
        res.check("version", torch.__version__.startswith(args.expect_version),
                  value=torch.__version__, expected=args.expect_version)
    if args.expect_torch_prefix:
        res.check("torch_location", torch.__file__.startswith(args.expect_torch_prefix),
                  value=torch.__file__, expected=args.expect_torch_prefix,
                  detail="torch was not imported from the environment under test")
    ops = _ops()
    if args.role == "host":
        inputs = _make_inputs()
        with res.timed("ops_s"):
            outputs = compute(ops, inputs)
        golden = {"seed": SEED, "torch_version": torch.__version__, "ops": {}}
        golden["rng_randn"] = {"output": tensor_to_json(_rng_sample()), "rtol": TOL["rng_randn"][0],
                               "atol": TOL["rng_randn"][1]}
        for name, out in outputs.items():
            rtol, atol = TOL[name]
            golden["ops"][name] = {"inputs": {k: tensor_to_json(v)
                                              for k, v in inputs[name].items()},
                                   "output": tensor_to_json(out), "rtol": rtol, "atol": atol}
        tmp = golden_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(golden, fh)
        os.replace(tmp, golden_path)
        res.figures["ops"] = sorted(outputs)
    else:
        with res.timed("load_golden_s"), open(golden_path, encoding="utf-8") as fh:
            golden = json.load(fh)
        res.info["golden_torch_version"] = golden.get("torch_version")
        rng = golden["rng_randn"]
        rep = compare_entry(tensor_to_json(_rng_sample()), rng["output"],
                            rtol=rng["rtol"], atol=rng["atol"])
        res.check("rng_randn", rep["ok"], value=_errs(rep), tol=_tol(rng), detail=rep["detail"])
        parity: dict[str, Any] = {}
        with res.timed("ops_s"):
            for name, entry in golden["ops"].items():
                if name not in ops:
                    res.check(f"op:{name}", False, detail="op unknown to this smoke module")
                    continue
                try:
                    inputs = {k: tensor_from_json(v) for k, v in entry["inputs"].items()}
                    rep = compare_entry(tensor_to_json(ops[name](inputs)), entry["output"],
                                        rtol=entry["rtol"], atol=entry["atol"])
                except Exception as exc:
                    rep = {"ok": False, "detail": f"{type(exc).__name__}: {exc}",
                           "max_abs_err": math.inf, "max_rel_err": math.inf}
                parity[name] = {**_errs(rep), **_tol(entry), "ok": rep["ok"]}
                res.check(f"op:{name}", rep["ok"], value=_errs(rep), tol=_tol(entry),
                          detail=rep["detail"])
        res.figures["parity"] = parity
    # Checks every role runs on its own (no golden needed).
    g64 = torch.Generator().manual_seed(SEED + 1)
    xs = (torch.randn(4, 3, generator=g64, dtype=torch.float64, requires_grad=True),
          torch.randn(3, 2, generator=g64, dtype=torch.float64, requires_grad=True))
    # raise_exception=False: a mismatch is a False to check, not an exception ending the suite.
    res.check("autograd_gradcheck",
              torch.autograd.gradcheck(lambda a, b: torch.tanh(a @ b).sum(dim=0), xs,
                                       raise_exception=False),
              detail="analytic and numeric gradients differ")
    buf = io.BytesIO()
    state = {"w": torch.randn(7, 5, generator=g64), "i": torch.arange(9),
             "h": torch.randn(3, generator=g64).half(), "c": torch.randn(2, dtype=torch.cfloat)}
    torch.save(state, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=True)
    res.check("serialization_roundtrip",
              all(torch.equal(state[k], back[k]) and state[k].dtype == back[k].dtype
                  for k in state), detail="torch.save/torch.load changed a tensor")
    # The matmuls above have loaded the BLAS library; now ask it which kernel it runs.
    kern = blas_kernel()
    res.info["blas"] = kern
    res.info["mapped_libraries"] = mapped_libraries()
    if args.expect_blas_core:
        got = str(kern.get("corename", kern["vendor"]))
        want = args.expect_blas_core
        res.check("blas_kernel", _norm_core(got) == _norm_core(want), value=got, expected=want,
                  detail=f"OpenBLAS picked {got}, the CPU model should get {want}")
    if args.expect_cpu_capability:
        got = str(res.info.get("cpu_capability"))
        want = args.expect_cpu_capability
        same = normalise_capability(got) == normalise_capability(want)
        res.check("cpu_capability", same, value=got, expected=want,
                  detail=f"ATen chose the {got} kernels; this CPU model must get {want}")
    if args.require_distributed:
        res.check("distributed_gloo", res.info.get("gloo") is True, value=res.info.get("gloo"),
                  detail="torch.distributed with gloo is not available")


def torch_c_extension(torch: Any) -> dict[str, Any]:
    """Where ``torch._C`` was loaded from, and whether that is right for this interpreter.

    It must sit in the directory of ``torch/__init__.py`` and end in this interpreter's
    extension suffix (``sysconfig`` EXT_SUFFIX, e.g. ``.cpython-313-riscv64-linux-gnu.so``).
    """
    import sysconfig

    path = str(getattr(torch._C, "__file__", "") or "")
    pkg = os.path.dirname(os.path.realpath(torch.__file__))
    suffix = str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")
    problems = []
    if not path:
        problems.append("torch._C has no file (not an extension module)")
    else:
        if os.path.dirname(os.path.realpath(path)) != pkg:
            problems.append(f"torch._C comes from {os.path.dirname(path)}, not {pkg}")
        if not path.endswith(suffix):
            problems.append(f"torch._C is {os.path.basename(path)}, this Python loads *{suffix}")
    return {"ok": not problems, "file": path, "expected": f"{pkg}/_C{suffix}",
            "detail": "; ".join(problems)}


def _norm_core(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _errs(rep: dict[str, Any]) -> dict[str, Any]:
    return {"max_abs_err": rep["max_abs_err"], "max_rel_err": rep["max_rel_err"]}


def _tol(entry: dict[str, Any]) -> dict[str, Any]:
    return {"rtol": entry["rtol"], "atol": entry["atol"]}


def main(argv: list[str] | None = None) -> int:
    p = base_parser("smoke", __doc__ or "")
    p.add_argument("--expect-version", default="", help="torch.__version__ must start with this")
    p.add_argument("--expect-torch-prefix", default="",
                   help="torch must be imported from below this path (a wheel's venv)")
    p.add_argument("--expect-blas-core", default="",
                   help="OpenBLAS core the CPU model must select (targets.toml openblas_core)")
    p.add_argument("--expect-cpu-capability", default="",
                   help="ATen CPU capability the CPU model must choose (DEFAULT, RVV): set for "
                   "a wheel built with --aten-rvv on")
    p.add_argument("--require-distributed", action="store_true")
    return run_suite("smoke", body, p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
