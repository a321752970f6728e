"""bench_rootfs.py keeps what an earlier run wrote for the arches a new run does not measure."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "rvtorch_bench_rootfs", ROOT / "benchmarks" / "bench_rootfs.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


bench_rootfs = _load()


def _manifest(scratch: Path, arch: str, with_torch: bool, seconds: float) -> None:
    name = f"trixie-{arch}{'-torch' if with_torch else ''}.json"
    m = {"arch": arch, "with_torch": with_torch, "seconds": seconds, "created": "T",
         "packages": ["libc6", "python3"]}
    if with_torch:
        m |= {"torch": "2.6.0+dfsg-7", "blas": "/usr/lib/x/libblas.so.3"}
    (scratch / "rootfs" / name).write_text(json.dumps(m))


def test_collect_merges_into_the_earlier_arches(tmp_path: Path) -> None:
    out = tmp_path / "rootfs.json"
    earlier = {"aarch64": {"cold_cpu_s": 358.5, "date": "D0"}, "riscv64": {"cold_cpu_s": 1.0}}
    out.write_text(json.dumps({"arches": earlier, "date": "D0"}))
    scratch = tmp_path / "scratch"
    (scratch / "rootfs").mkdir(parents=True)
    _manifest(scratch, "riscv64", False, 12.5)
    _manifest(scratch, "riscv64", True, 30.0)
    (scratch / "rootfs" / ".trixie-host-torch.tmp-99").mkdir()
    assert bench_rootfs.collect(scratch, out) == 0
    data = json.loads(out.read_text())
    assert data["arches"]["aarch64"] == earlier["aarch64"]  # not measured: kept as written
    rv = data["arches"]["riscv64"]  # measured again: replaced, never mixed with the old entry
    assert "cold_cpu_s" not in rv
    assert rv["base_step_wall_s"] == 12.5 and rv["torch_step_wall_s"] == 30.0
    assert rv["interrupted_run"] is True and rv["together"] == ["riscv64"]
    assert data["unfinished"] == [".trixie-host-torch.tmp-99"]


def test_previous_arches_of_a_missing_or_broken_file(tmp_path: Path) -> None:
    assert bench_rootfs.previous_arches(tmp_path / "none.json") == {}
    (tmp_path / "bad.json").write_text("{")
    assert bench_rootfs.previous_arches(tmp_path / "bad.json") == {}
