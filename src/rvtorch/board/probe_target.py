"""Runs ON THE BOARD (sent over SSH to its python3's stdin): what the CPU and torch are.

Standard library only. Prints one JSON object:

* ``isa`` (riscv64 ``/proc/cpuinfo``), ``mvendorid``/``marchid`` (hwprobe, else cpuinfo),
  ``vector`` (hwprobe's IMA_V bit, else AT_HWCAP's ``V`` bit), ``vlen`` in bits (the ``vlenb``
  CSR, read by running ``csrr a0, vlenb; ret`` from an executable page in a child process, so a
  core that traps it cannot take the probe down);
* aarch64: ``features`` from cpuinfo, ``sve`` (HWCAP_SVE) and ``vlen`` (``prctl(PR_SVE_GET_VL)``);
* with ``--torch``: torch's version, ``torch.__config__.show()`` and the OpenBLAS kernel it picks
  (``OPENBLAS_VERBOSE=2`` prints ``Core: ...`` on stderr during the first GEMM; the caller sets
  the variable and reads the line).
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import platform
import struct
import sys
from typing import Any

AT_HWCAP = 16
RISCV_HWPROBE_SYSCALL = 258  # riscv64 Linux >= 6.4
HWPROBE_KEYS = {"mvendorid": 0, "marchid": 1, "mimpid": 2, "ima_ext_0": 4}
HWPROBE_IMA_V = 1 << 2
HWCAP_RISCV_V = 1 << (ord("V") - ord("A"))
HWCAP_ARM64_SVE = 1 << 22
PR_SVE_GET_VL = 51
# csrr a0, vlenb (csrrs a0, 0xc22, zero) ; ret
VLENB_CODE = struct.pack("<II", 0xC2202573, 0x00008067)


def cpuinfo() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return out
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key and key not in out:
            out[key] = value.strip()
    return out


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def hwprobe() -> dict[str, int] | None:
    """riscv_hwprobe(2): None where the kernel has no such syscall."""
    pairs = (ctypes.c_int64 * (2 * len(HWPROBE_KEYS)))()
    for i, key in enumerate(HWPROBE_KEYS.values()):
        pairs[2 * i] = key
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(RISCV_HWPROBE_SYSCALL), pairs,
                      ctypes.c_size_t(len(HWPROBE_KEYS)), ctypes.c_size_t(0), None,
                      ctypes.c_uint(0))
    if rc != 0:
        return None
    return {name: pairs[2 * i + 1] & 0xFFFFFFFFFFFFFFFF
            for i, name in enumerate(HWPROBE_KEYS)}


def hwcap() -> int:
    libc = _libc()
    libc.getauxval.restype = ctypes.c_ulong
    return int(libc.getauxval(ctypes.c_ulong(AT_HWCAP)))


def _in_child(fn: Any) -> int | None:
    """fn() in a forked child; None if it died (SIGILL on a core without the instruction)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            os.write(w, str(int(fn())).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = os.read(r, 64)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if not os.WIFEXITED(status) or not data:
        return None
    return int(data)


def riscv_vlenb() -> int:
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(VLENB_CODE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    return int(ctypes.CFUNCTYPE(ctypes.c_long)(addr)())


def sve_vl() -> int:
    libc = _libc()
    return int(libc.prctl(PR_SVE_GET_VL, 0, 0, 0, 0)) & 0xFFFF


def cpu() -> dict[str, Any]:
    info = cpuinfo()
    machine = platform.machine()
    out: dict[str, Any] = {"machine": machine, "cpus": os.cpu_count()}
    if machine == "riscv64":
        out["isa"] = info.get("isa")
        out["uarch"] = info.get("uarch")
        probe = hwprobe()
        out["hwprobe"] = probe is not None
        caps = hwcap()
        if probe is not None:
            out["mvendorid"] = hex(probe["mvendorid"])
            out["marchid"] = hex(probe["marchid"])
            out["vector"] = bool(probe["ima_ext_0"] & HWPROBE_IMA_V)
        else:
            out["mvendorid"] = info.get("mvendorid")
            out["marchid"] = info.get("marchid")
            out["vector"] = bool(caps & HWCAP_RISCV_V)
        vlenb = _in_child(riscv_vlenb) if out["vector"] else None
        out["vlen"] = vlenb * 8 if vlenb else None
    elif machine == "aarch64":
        out["features"] = info.get("Features")
        out["cpu_part"] = info.get("CPU part")
        out["vector"] = bool(hwcap() & HWCAP_ARM64_SVE)
        vl = _in_child(sve_vl) if out["vector"] else None
        out["vlen"] = vl * 8 if vl else None
    return out


def torch_info() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        import torch
    except Exception as exc:  # the caller turns this into a one-line error
        out["import_error"] = f"{type(exc).__name__}: {exc}"
        return out
    out["version"] = getattr(torch, "__version__", None)
    out["file"] = getattr(torch, "__file__", None)
    config = getattr(torch, "__config__", None)
    out["config"] = config.show() if config is not None else None
    if hasattr(torch, "randn"):
        # The first GEMM makes OpenBLAS print its kernel under OPENBLAS_VERBOSE=2.
        a = torch.randn(64, 64)
        out["gemm_ok"] = bool(torch.isfinite(a @ a).all())
    return out


def main(argv: list[str]) -> int:
    report: dict[str, Any] = {"cpu": cpu(), "python": sys.version.split()[0],
                              "executable": sys.executable, "libc": list(platform.libc_ver())}
    if "--torch" in argv:
        report["torch"] = torch_info()
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
