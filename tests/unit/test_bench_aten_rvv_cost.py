"""bench_aten_rvv_cost.py: the kernel compile jobs taken from a tree's compile commands, the
per-capability sums, the wheel and ELF figures, and the refusals (no on wheel, a trial run
without --out) that must leave no record behind."""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from elftools.elf.elffile import ELFFile

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "rvtorch_bench_aten_rvv_cost", ROOT / "benchmarks" / "bench_aten_rvv_cost.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


cost = _load()

OBJ = "caffe2/CMakeFiles/torch_cpu.dir/__/aten/src/ATen/native/cpu"
SRC = "/rvtorch/src/build/aten/src/ATen/native/cpu"


def _entry(kernel: str, cap: str, launcher: str = "") -> dict[str, str]:
    march = "rv64gcv" if cap == "RVV" else "rv64gc"
    out = f"{OBJ}/{kernel}.cpp.{cap}.cpp.o"
    src = f"{SRC}/{kernel}.cpp.{cap}.cpp"
    cmd = (f"{launcher}/usr/bin/riscv64-linux-gnu-g++-14 -DX=1 -I/rvtorch/src/aten/src "
           f"-march=rv64gc -O2 -march={march} -DCPU_CAPABILITY={cap} -DCPU_CAPABILITY_{cap} "
           f"-o {out} -c {src}")
    return {"directory": "/rvtorch/src/build", "command": cmd, "file": src, "output": out}


def _commands() -> list[dict[str, str]]:
    entries = [{"directory": "/rvtorch/src/build", "file": "/rvtorch/src/aten/src/ATen/Context.cpp",
                "output": "caffe2/CMakeFiles/torch_cpu.dir/__/aten/src/ATen/Context.cpp.o",
                "command": "/usr/bin/riscv64-linux-gnu-g++-14 -o x.o -c Context.cpp"}]
    for k in ("SoftMaxKernel", "BinaryOpsKernel", "airy_ai"):
        entries += [_entry(k, "DEFAULT"), _entry(k, "RVV", launcher="/usr/bin/ccache ")]
    # a kernel file outside native/cpu that ATen compiles per capability too
    quant = "aten/src/ATen/native/quantized/cpu/kernels"
    for cap in ("DEFAULT", "RVV"):
        e = _entry("QuantizedOpKernels", cap)
        entries.append({k: v.replace(OBJ, f"caffe2/CMakeFiles/torch_cpu.dir/__/{quant}")
                         .replace(SRC, f"/rvtorch/src/build/{quant}") for k, v in e.items()})
    return entries


def test_kernel_jobs_take_both_copies_of_every_native_cpu_kernel() -> None:
    jobs = cost.kernel_jobs(_commands(), scratch="/rvtorch/scratch")
    assert [(j.kernel, j.capability) for j in jobs] == [
        ("BinaryOpsKernel", "DEFAULT"), ("BinaryOpsKernel", "RVV"),
        ("QuantizedOpKernels", "DEFAULT"), ("QuantizedOpKernels", "RVV"),
        ("SoftMaxKernel", "DEFAULT"), ("SoftMaxKernel", "RVV"),
        ("airy_ai", "DEFAULT"), ("airy_ai", "RVV"),
    ]
    assert cost.kernel_dirs(_commands(), {j.kernel for j in jobs}) == {
        "aten/src/ATen/native/cpu": 3, "aten/src/ATen/native/quantized/cpu/kernels": 1}
    rvv = jobs[1]
    # the object goes to the scratch dir (the tree is mounted read-only), the compiler is called
    # directly (no ccache launcher: it must really compile), the flags stay as ninja has them
    assert rvv.argv[0] == "/usr/bin/riscv64-linux-gnu-g++-14"
    assert "/usr/bin/ccache" not in rvv.argv
    out = rvv.argv[rvv.argv.index("-o") + 1]
    assert out == "/rvtorch/scratch/obj/BinaryOpsKernel.cpp.RVV.cpp.o"
    assert rvv.argv[rvv.argv.index("-MF") + 1] == out + ".d"
    assert "-march=rv64gcv" in rvv.argv and "-DCPU_CAPABILITY_RVV" in rvv.argv
    assert list(rvv.argv[-2:]) == ["-c", f"{SRC}/BinaryOpsKernel.cpp.RVV.cpp"]
    assert rvv.cwd == "/rvtorch/src/build"
    assert rvv.object == "BinaryOpsKernel.cpp.RVV.cpp.o"


def test_only_and_limit_select_whole_kernels() -> None:
    only = cost.kernel_jobs(_commands(), scratch="/s", only="Soft|airy")
    assert {j.kernel for j in only} == {"SoftMaxKernel", "airy_ai"}
    limited = cost.kernel_jobs(_commands(), scratch="/s", limit=1)
    assert [(j.kernel, j.capability) for j in limited] == [
        ("BinaryOpsKernel", "DEFAULT"), ("BinaryOpsKernel", "RVV")]
    with pytest.raises(cost.UsageError, match="no per-capability kernel file matches"):
        cost.kernel_jobs(_commands(), scratch="/s", only="NoSuchKernel")


def test_kernel_jobs_refuse_a_tree_without_the_rvv_copies() -> None:
    default_only = [e for e in _commands() if ".RVV." not in e["output"]]
    with pytest.raises(cost.UsageError, match="no RVV copy"):
        cost.kernel_jobs(default_only, scratch="/s")


def test_flag_difference_between_two_commands() -> None:
    a, b = _entry("SoftMaxKernel", "DEFAULT"), _entry("SoftMaxKernel", "RVV")
    added, removed = cost.flag_difference(a["command"], b["command"])
    assert added == ["-DCPU_CAPABILITY=RVV", "-DCPU_CAPABILITY_RVV", "-march=rv64gcv"]
    assert removed == ["-DCPU_CAPABILITY=DEFAULT", "-DCPU_CAPABILITY_DEFAULT"]


def _rec(kernel: str, cap: str, cpu: float, text: int, wall: float = 1.0) -> dict[str, object]:
    return {"object": f"{kernel}.cpp.{cap}.cpp.o", "kernel": kernel, "capability": cap,
            "rc": 0, "user_s": cpu * 0.9, "sys_s": cpu * 0.1, "cpu_s": cpu, "wall_s": wall,
            "maxrss_mib": 100,
            "elf": {"text": text, "rodata": 10, "eh_frame": 5, "alloc": text + 15}}


def test_aggregate_sums_each_capability_and_the_ratio() -> None:
    recs = [_rec("A", "DEFAULT", 10.0, 1000), _rec("A", "RVV", 25.0, 3000, wall=3.0),
            _rec("B", "DEFAULT", 30.0, 2000), _rec("B", "RVV", 35.0, 2500)]
    agg = cost.aggregate(recs)
    assert agg["DEFAULT"]["objects"] == 2 and agg["RVV"]["objects"] == 2
    assert agg["DEFAULT"]["cpu_s"] == pytest.approx(40.0)
    assert agg["RVV"]["cpu_s"] == pytest.approx(60.0)
    assert agg["RVV"]["wall_s"] == pytest.approx(4.0)
    assert agg["DEFAULT"]["text_bytes"] == 3000 and agg["RVV"]["text_bytes"] == 5500
    assert agg["rvv_over_default"]["cpu"] == pytest.approx(1.5)
    assert agg["rvv_over_default"]["text"] == pytest.approx(5500 / 3000, abs=1e-3)
    # the kernels whose RVV copy costs the most come first
    assert [p["kernel"] for p in agg["kernels"]] == ["B", "A"]
    assert agg["kernels"][0]["rvv_cpu_s"] == pytest.approx(35.0)
    assert agg["kernels"][1]["default_text"] == 1000


def test_aggregate_refuses_a_failed_or_missing_compile() -> None:
    bad = _rec("A", "RVV", 1.0, 10) | {"rc": 1}
    with pytest.raises(cost.BuildError, match=r"A\.cpp\.RVV\.cpp\.o"):
        cost.aggregate([_rec("A", "DEFAULT", 1.0, 10), bad])
    with pytest.raises(cost.BuildError, match="no RVV"):
        cost.aggregate([_rec("A", "DEFAULT", 1.0, 10)])


def _elf() -> Path:
    exe = Path(sys.executable).resolve()
    with exe.open("rb") as fh:
        if fh.read(4) != b"\x7fELF":
            pytest.skip(f"{exe} is not an ELF file (needs an ELF interpreter binary)")
    return exe


def test_elf_sizes_match_the_section_headers(tmp_path: Path) -> None:
    exe = _elf()
    sizes = cost.elf_sizes(exe)
    with exe.open("rb") as fh:
        elf = ELFFile(fh)
        text = elf.get_section_by_name(".text")
        assert text is not None
        assert sizes["sections"]["text"] == text["sh_size"]
        execs = sum(s["sh_size"] for s in elf.iter_sections()
                    if s["sh_flags"] & 0x4 and s["sh_flags"] & 0x2)
    assert sizes["text"] == execs
    assert sizes["alloc"] >= sizes["text"] + sizes["rodata"]
    assert "not-a-section" not in sizes["sections"]
    assert all("." not in k for k in sizes["sections"])  # doc_numbers reads dotted key paths
    assert cost.section_key(".rela.dyn") == "rela_dyn"
    not_elf = tmp_path / "x.o"
    not_elf.write_bytes(b"not an ELF")
    with pytest.raises(cost.BuildError, match=r"x\.o"):
        cost.elf_sizes(not_elf)


def test_arch_string_is_read_from_the_riscv_attributes() -> None:
    blob = (b"A\x1f\x00\x00\x00riscv\x00\x01\x15\x00\x00\x00\x05"
            b"rv64i2p1_m2p0_a2p1_f2p2_d2p2_c2p0_v1p0_zicsr2p0\x00")
    assert cost.arch_string(blob) == "rv64i2p1_m2p0_a2p1_f2p2_d2p2_c2p0_v1p0_zicsr2p0"
    assert cost.has_vector(cost.arch_string(blob))
    assert not cost.has_vector("rv64i2p1_m2p0_a2p1_f2p2_d2p2_c2p0_zicsr2p0_zifencei2p0")
    assert cost.arch_string(b"") is None


def _wheel(tmp_path: Path, name: str, features: list[str] | None) -> Path:
    d = tmp_path / name
    d.mkdir()
    whl = d / "torch-2.6.0+riscv64-cp313-cp313-manylinux_2_39_riscv64.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(_elf(), "torch/lib/libtorch_cpu.so")
        z.writestr("torch/__init__.py", "x = 1\n" * 100)
    if features is not None:
        info = {"plan": {"features": features}, "validation": {"status": "passed"},
                "sha256": "ab" * 32}
        Path(f"{whl}.build-info.json").write_text(json.dumps(info))
    return d


def test_wheel_stats_read_the_library_and_the_build_info(tmp_path: Path) -> None:
    d = _wheel(tmp_path, "on", ["aten-rvv"])
    whl = cost.find_wheel(d, "on")
    st = cost.wheel_stats(whl, scratch=tmp_path)
    with zipfile.ZipFile(whl) as z:
        zi = z.getinfo("torch/lib/libtorch_cpu.so")
    assert st["name"] == whl.name
    assert st["size_bytes"] == whl.stat().st_size
    assert st["libtorch_cpu"]["compressed_bytes"] == zi.compress_size
    assert st["libtorch_cpu"]["uncompressed_bytes"] == zi.file_size
    assert st["libtorch_cpu"]["sections"]["text"] > 0
    assert st["features"] == ["aten-rvv"] and st["capability_rvv"] is True
    assert st["validation"] == "passed"
    assert "/" not in json.dumps(st).replace("torch/lib/", "")  # no machine paths
    off = cost.wheel_stats(cost.find_wheel(_wheel(tmp_path, "off", []), "off"), scratch=tmp_path)
    assert off["features"] == [] and off["capability_rvv"] is False


def test_find_wheel_needs_the_wheel_and_its_build_info(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(cost.UsageError, match="no on wheel"):
        cost.find_wheel(tmp_path / "empty", "on")
    with pytest.raises(cost.UsageError, match="build-info"):
        cost.find_wheel(_wheel(tmp_path, "bare", None), "on")


def test_from_clean_record_is_the_latest_riscv64_build_from_an_empty_ccache() -> None:
    data = {
        "history": [
            {"arch": "riscv64", "started": "2026-11-26T07:23:52Z",
             "step_durations_s": {"compile (so far)": 6706}},
            {"arch": "riscv64", "started": "2026-12-05T02:01:15Z", "jobs": 2,
             "start_state": {"from_clean": True}, "step_durations_s": {"compile": 5646},
             "ninja": {"done": 1355, "total": 1359}},
            {"arch": "aarch64", "started": "2026-12-06T00:00:00Z",
             "start_state": {"from_clean": True}, "step_durations_s": {"compile": 1}},
        ],
        "riscv64": {"arch": "riscv64", "started": "2026-12-05T03:42:42Z",
                    "start_state": {"from_clean": False}, "step_durations_s": {"compile": 3}},
    }
    rec = cost.from_clean_record(data, "riscv64")
    assert rec == {"file": "full_build.json", "started": "2026-12-05T02:01:15Z",
                   "compile_wall_s": 5646, "jobs": 2, "ninja_targets": 1359}
    assert cost.from_clean_record({"riscv64": data["riscv64"]}, "riscv64") is None


def test_trial_run_needs_out_and_a_missing_on_wheel_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "aten_rvv_cost.json"
    off = _wheel(tmp_path, "off", [])
    (tmp_path / "on").mkdir()
    base = ["--off-dist", str(off), "--on-dist", str(tmp_path / "on"), "--results", str(results)]
    assert cost.main([*base, "--limit", "2"]) == 2
    assert "--out" in capsys.readouterr().err
    assert cost.main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rvtorch: error: no on wheel") and len(err) == 1
    assert not results.exists()


def test_worker_command_line_is_what_the_container_runs(tmp_path: Path) -> None:
    argv = cost.worker_argv("/rvtorch/scratch", jobs=2)
    assert argv[:2] == ["python3", "/rvtorch/scratch/bench_aten_rvv_cost.py"]
    assert argv[2:] == ["_worker", "/rvtorch/scratch", "--jobs", "2"]
    assert shlex.join(argv)


def test_an_interrupted_run_finds_exactly_the_processes_of_its_own_container(
        tmp_path: Path) -> None:
    marker = "RVTORCH_ATEN_RVV_COST_RUN=42-7"
    for pid, env in (("101", f"PATH=/usr/bin\0{marker}\0"), ("102", "PATH=/usr/bin\0"),
                     ("103", "RVTORCH_ATEN_RVV_COST_RUN=42-77\0"), ("self", f"{marker}\0")):
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "environ").write_bytes(env.encode())
    (tmp_path / "104").mkdir()  # a process that went away: no environ to read
    assert cost.marked_pids(marker, tmp_path) == [101]


def test_the_wheels_must_be_without_and_with_the_capability(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "aten_rvv_cost.json"
    on, off = _wheel(tmp_path, "on", ["aten-rvv"]), _wheel(tmp_path, "off", [])
    for off_dist, on_dist, what in ((on, on, "off wheel"), (off, off, "on wheel")):
        argv = ["--off-dist", str(off_dist), "--on-dist", str(on_dist), "--results", str(results)]
        assert cost.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"rvtorch: error: the {what} in ")
    assert not results.exists()


def test_tree_differences_name_every_changed_added_or_removed_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for t in (a, b):
        (t / "aten/src/ATen/native/cpu").mkdir(parents=True)
        (t / "aten/src/ATen/native/cpu/SoftMaxKernel.cpp").write_text("same\n")
        (t / "c10").mkdir()
        (t / "outside.txt").write_text(t.name)  # not a kernel input: not compared
    (a / "aten/src/ATen/native/DispatchStub.cpp").write_text("old\n")
    (b / "aten/src/ATen/native/DispatchStub.cpp").write_text("new\n")
    (b / "c10/new.h").write_text("x\n")
    assert cost.tree_differences(a, b, dirs=("aten/src", "c10")) == [
        "aten/src/ATen/native/DispatchStub.cpp", "c10/new.h"]
    assert cost.tree_differences(a, a, dirs=("aten/src", "c10")) == []


def test_one_run_at_a_time_per_scratch_directory(tmp_path: Path) -> None:
    held = cost._lock(tmp_path)
    with pytest.raises(cost.UsageError, match="another run is measuring"):
        cost._lock(tmp_path)
    held.close()
    cost._lock(tmp_path).close()


def _partial_commands() -> list[dict[str, str]]:
    """A tree built with USE_RVV_KERNELS: every kernel file has a DEFAULT copy, only some an RVV
    one; the first kernel in sorted order has none."""
    entries = []
    for k in ("AdaptiveAvgPoolKernel", "BinaryOpsKernel", "GridSamplerKernel", "SoftMaxKernel"):
        entries.append(_entry(k, "DEFAULT"))
        if k in ("BinaryOpsKernel", "SoftMaxKernel"):
            entries.append(_entry(k, "RVV"))
    return entries


def test_a_tree_where_only_some_kernels_have_an_rvv_copy() -> None:
    entries = _partial_commands()
    jobs = cost.kernel_jobs(entries, scratch="/s")
    assert [(j.kernel, j.capability) for j in jobs] == [
        ("AdaptiveAvgPoolKernel", "DEFAULT"), ("BinaryOpsKernel", "DEFAULT"),
        ("BinaryOpsKernel", "RVV"), ("GridSamplerKernel", "DEFAULT"),
        ("SoftMaxKernel", "DEFAULT"), ("SoftMaxKernel", "RVV")]
    assert cost.kernel_census(entries) == {
        "kernels_in_tree": 4, "rvv_kernels_in_tree": 2,
        "kernels_without_rvv": ["AdaptiveAvgPoolKernel", "GridSamplerKernel"]}
    # the flags are compared on the first kernel with both copies, not on jobs[0]'s
    default, rvv = cost.flag_pair(entries, [j.kernel for j in jobs])
    assert default["output"].endswith("/BinaryOpsKernel.cpp.DEFAULT.cpp.o")
    assert rvv["output"].endswith("/BinaryOpsKernel.cpp.RVV.cpp.o")
    # measured kernels without a pair: the first pair of the tree
    default, rvv = cost.flag_pair(entries, ["GridSamplerKernel"])
    assert rvv["output"].endswith("/BinaryOpsKernel.cpp.RVV.cpp.o")
    with pytest.raises(cost.UsageError, match="both a DEFAULT and an RVV copy"):
        cost.flag_pair([e for e in entries if ".RVV." not in e["output"]], ["BinaryOpsKernel"])
    # a trial whose kernels have no RVV copy is refused before anything is compiled
    with pytest.raises(cost.UsageError, match="none of the 2 selected kernel files has an RVV"):
        cost.kernel_jobs(entries, scratch="/s", only="Adaptive|Grid")
    assert [j.kernel for j in cost.kernel_jobs(entries, scratch="/s", limit=2)] == [
        "AdaptiveAvgPoolKernel", "BinaryOpsKernel", "BinaryOpsKernel"]


def test_aggregate_with_kernels_without_an_rvv_copy() -> None:
    recs = [_rec("A", "DEFAULT", 10.0, 1000), _rec("A", "RVV", 15.0, 1200),
            _rec("B", "DEFAULT", 40.0, 5000),  # no RVV copy
            _rec("C", "DEFAULT", 20.0, 2000), _rec("C", "RVV", 25.0, 1800)]
    agg = cost.aggregate(recs)
    # DEFAULT over every DEFAULT copy, RVV over the RVV copies
    assert agg["DEFAULT"]["objects"] == 3 and agg["RVV"]["objects"] == 2
    assert agg["DEFAULT"]["cpu_s"] == pytest.approx(70.0)
    assert agg["RVV"]["cpu_s"] == pytest.approx(40.0)
    assert agg["rvv_over_default"]["cpu"] == pytest.approx(40 / 70, abs=1e-3)
    assert agg["rvv_over_default"]["text"] == pytest.approx(3000 / 8000, abs=1e-3)
    same = agg["rvv_over_default_same_kernels"]
    assert same["kernels"] == 2
    assert same["default_cpu_s"] == pytest.approx(30.0)
    assert same["rvv_cpu_s"] == pytest.approx(40.0)
    assert same["default_text_bytes"] == 3000 and same["rvv_text_bytes"] == 3000
    assert same["cpu"] == pytest.approx(40 / 30, abs=1e-3)
    assert same["text"] == pytest.approx(1.0)
    b = next(p for p in agg["kernels"] if p["kernel"] == "B")
    assert b["rvv_cpu_s"] is None and b["default_cpu_s"] == pytest.approx(40.0)


def test_wheel_budget_against_the_published_off_wheel() -> None:
    off = {"size_bytes": 65_100_000, "size_mb": 65.1}
    within = cost.wheel_budget(off, {"size_bytes": 65_140_000, "size_mb": 65.1})
    assert within == {"size_mb": 65.1, "on_size_mb": 65.1, "on_within_budget": True,
                      "headroom_bytes": -40_000}
    over = cost.wheel_budget(off, {"size_bytes": 71_700_000, "size_mb": 71.7})
    assert over["on_within_budget"] is False and over["headroom_bytes"] == -6_600_000


def test_off_wheel_is_measured_recompressed_on_a_copy_and_growth_is_against_both(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    import rvtorch.wheel

    calls: list[Path] = []

    def fake_recompress(wheel: Path, *, level: int = 3) -> dict[str, object]:
        # stands in for advzip: rewrites the zip with a stronger zlib level, same members
        calls.append(wheel)
        before = wheel.stat().st_size
        tmp = wheel.with_suffix(".tmp")
        with zipfile.ZipFile(wheel) as a, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED,
                                                          compresslevel=9) as b:
            for i in a.infolist():
                b.writestr(i.filename, a.read(i))
        tmp.replace(wheel)
        return {"tool": "advzip --recompress -3", "bytes_before": before,
                "bytes_after": wheel.stat().st_size, "seconds": 0.5}

    monkeypatch.setattr(rvtorch.wheel, "recompress_wheel", fake_recompress)
    off_d = tmp_path / "off"
    off_d.mkdir()
    off_whl = off_d / "torch-2.6.0+riscv64-cp313-cp313-manylinux_2_39_riscv64.whl"
    with zipfile.ZipFile(off_whl, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.write(_elf(), "torch/lib/libtorch_cpu.so")
        z.writestr("torch/__init__.py", "x = 1\n" * 1000)
    Path(f"{off_whl}.build-info.json").write_text(json.dumps({"plan": {"features": []}}))
    on_whl = cost.find_wheel(_wheel(tmp_path, "on", ["aten-rvv"]), "on")
    published = hashlib.sha256(off_whl.read_bytes()).hexdigest()
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    rec = cost.recompressed_stats(off_whl, scratch=scratch)
    # the copy in the scratch dir was recompressed and removed; the published wheel untouched
    assert calls == [scratch / "recompress" / off_whl.name]
    assert hashlib.sha256(off_whl.read_bytes()).hexdigest() == published
    assert list(scratch.iterdir()) == []
    assert rec["tool"] == "advzip --recompress -3" and rec["seconds"] == 0.5
    assert rec["bytes_before"] == off_whl.stat().st_size
    assert rec["size_bytes"] == rec["bytes_after"] < off_whl.stat().st_size
    assert rec["size_mb"] == round(rec["size_bytes"] / 1e6, 1)
    with zipfile.ZipFile(off_whl) as z:
        lib_off = z.getinfo("torch/lib/libtorch_cpu.so")
    assert rec["libtorch_cpu"]["uncompressed_bytes"] == lib_off.file_size
    assert 0 < rec["libtorch_cpu"]["compressed_bytes"] < lib_off.compress_size

    off = cost.wheel_stats(off_whl, scratch=scratch)
    on = cost.wheel_stats(on_whl, scratch=scratch)
    assert off["recompress"] is None
    g = cost.wheel_growth(off, on, off_whl, on_whl, off_recompressed=rec)
    assert g["size_bytes"] == on["size_bytes"] - off["size_bytes"]
    assert g["size_bytes_vs_off_recompressed"] == on["size_bytes"] - rec["size_bytes"]
    assert g["size_mb_vs_off_recompressed"] == round(g["size_bytes_vs_off_recompressed"] / 1e6, 2)
    assert g["libtorch_cpu_compressed_bytes_vs_off_recompressed"] == (
        on["libtorch_cpu"]["compressed_bytes"] - rec["libtorch_cpu"]["compressed_bytes"])
    assert "size_bytes_vs_off_recompressed" not in cost.wheel_growth(off, on, off_whl, on_whl)


def test_a_run_without_advzip_is_refused_before_compiling(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    real_which = shutil.which
    monkeypatch.setattr(shutil, "which",
                        lambda name, *a, **k: None if name == "advzip" else real_which(name))
    results = tmp_path / "aten_rvv_cost.json"
    on, off = _wheel(tmp_path, "on", ["aten-rvv"]), _wheel(tmp_path, "off", [])
    argv = ["--off-dist", str(off), "--on-dist", str(on), "--results", str(results)]
    assert cost.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rvtorch: error: advzip not found")
    assert not results.exists()


def test_table_shows_the_same_kernel_ratio_the_recompressed_off_wheel_and_the_budget(
        tmp_path: Path) -> None:
    agg = cost.aggregate([_rec("A", "DEFAULT", 10.0, 1000), _rec("A", "RVV", 15.0, 1200),
                          _rec("B", "DEFAULT", 40.0, 5000)])
    off_whl = cost.find_wheel(_wheel(tmp_path, "off", []), "off")
    on_whl = cost.find_wheel(_wheel(tmp_path, "on", ["aten-rvv"]), "on")
    off = cost.wheel_stats(off_whl, scratch=tmp_path)
    on = cost.wheel_stats(on_whl, scratch=tmp_path)
    rec = {"size_bytes": off["size_bytes"] - 100, "size_mb": off["size_mb"],
           "libtorch_cpu": {"compressed_bytes": off["libtorch_cpu"]["compressed_bytes"] - 90},
           "tool": "advzip --recompress -3", "seconds": 1.0}
    res = {"compile": {**{k: agg[k] for k in ("DEFAULT", "RVV", "rvv_over_default",
                                              "rvv_over_default_same_kernels")}, "jobs": 2},
           "machine": {"load1_min": 1.0, "load1_max": 2.0, "load1_mean": 1.5},
           "wheels": {"off": off, "on": on, "off_recompressed": rec,
                      "budget": cost.wheel_budget(off, on),
                      "growth": cost.wheel_growth(off, on, off_whl, on_whl, off_recompressed=rec)}}
    out = cost.table(res)
    assert "same 1 kernels CPU s" in out and "1.50" in out
    line = next(ln for ln in out.splitlines() if "off recompressed (advzip)" in ln)
    assert line.split()[-1] == str(on["size_bytes"] - rec["size_bytes"])
    assert "budget (off as published) MB" in out
