"""Unit tests of the torch build plan: torch.toml validation, flag precedence, the patch manifest,
source mirror/download handling (a local HTTP server, no network) and ninja progress parsing."""

from __future__ import annotations

import copy
import hashlib
import http.server
import json
import re
import shutil
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from rvtorch import build, sources
from rvtorch.errors import BuildError, SourceError, UsageError
from rvtorch.patches import describe_failure, load_series, series_for
from rvtorch.torchspec import PinnedFile, parse_spec, torch_version
from tests.conftest import ROOT, run_cli


def raw_spec() -> dict:
    with (ROOT / "toolchains" / "torch.toml").open("rb") as fh:
        return tomllib.load(fh)


# ------------------------------------------------------------------------------- torch.toml
def test_spec_pins_the_facts() -> None:
    tv = torch_version("2.6.0")
    assert (
        tv.debian.orig.sha256 == "099a9601bc40d67656e75735c44abedb0fbe92d08817852ab7472eebb7e6ddff"
    )
    assert tv.debian.orig.size == 27212640
    assert tv.upstream.tag == "v2.6.0" and len(tv.upstream.commit) == 40


def test_unknown_key_suggests() -> None:
    data = copy.deepcopy(raw_spec())
    data["torch"]["2.6.0"]["patchez"] = data["torch"]["2.6.0"].pop("patches")
    with pytest.raises(UsageError, match="unknown key 'patchez'") as exc:
        parse_spec(data)
    assert "did you mean 'patches'" in exc.value.one_line()


def test_unknown_env_target_arch_and_bad_sha() -> None:
    data = copy.deepcopy(raw_spec())
    data["torch"]["2.6.0"]["env_target"]["riscv46"] = {}
    with pytest.raises(UsageError) as exc:
        parse_spec(data)
    assert "did you mean 'riscv64'" in exc.value.one_line()
    data = copy.deepcopy(raw_spec())
    data["torch"]["2.6.0"]["source"]["debian"]["files"][0]["sha256"] = "abc"
    with pytest.raises(UsageError, match="64 lower-case hex"):
        parse_spec(data)


def test_debian_source_vendors_gloo_and_httplib_without_system_gloo() -> None:
    """The debian provider restores gloo (PyTorch 2.6.0's submodule commit) and cpp-httplib from
    pinned Debian orig tarballs and builds gloo itself: USE_SYSTEM_LIBS=1 would force the sysroot's
    libgloo (with OpenMPI/ibverbs/hiredis) back in, so it is "0" and every USE_SYSTEM_* explicit."""
    tv = torch_version("2.6.0")
    dests = {v.dest: v for v in tv.debian.vendored}
    assert set(dests) == {"third_party/gloo", "third_party/cpp-httplib"}
    assert "5354032" in dests["third_party/gloo"].file.name
    env = tv.resolve_env(provider="debian", arch="riscv64")
    assert env["USE_SYSTEM_LIBS"] == "0" and env["USE_SYSTEM_GLOO"] == "0"
    assert env["USE_GLOO"] == "1" and env["USE_MPI"] == "0"
    assert "libgloo-dev" not in tv.debian.sysroot_packages
    plan = build.make_plan("riscv64", provider="debian", stage="partial")
    assert [v["to"] for v in plan.source["vendored"]] == [v.dest for v in tv.debian.vendored]
    assert "gloo" in plan.targets  # the partial build compiles the vendored gloo


def test_vendored_entries_are_validated() -> None:
    data = copy.deepcopy(raw_spec())
    data["torch"]["2.6.0"]["source"]["debian"]["vendored"][0]["to"] = "../gloo"
    with pytest.raises(UsageError, match="under third_party/"):
        parse_spec(data)
    data = copy.deepcopy(raw_spec())
    data["torch"]["2.6.0"]["source"]["debian"]["vendored"][1]["sha256"] = "f" * 63
    with pytest.raises(UsageError, match=r"vendored\[1\]\.sha256"):
        parse_spec(data)
    data = copy.deepcopy(raw_spec())
    del data["torch"]["2.6.0"]["source"]["debian"]["vendored"][0]["tree"]
    with pytest.raises(UsageError, match="missing key 'tree'"):
        parse_spec(data)


def test_non_string_flag_rejected() -> None:
    data = copy.deepcopy(raw_spec())
    data["torch"]["2.6.0"]["env"]["USE_CUDA"] = 0
    with pytest.raises(UsageError, match="values are strings"):
        parse_spec(data)


def test_unknown_version_suggests() -> None:
    with pytest.raises(UsageError) as exc:
        torch_version("2.6.1")
    assert "did you mean '2.6.0'" in exc.value.one_line()


# --------------------------------------------------------------------------- flag precedence
def test_flag_precedence_chain() -> None:
    data = copy.deepcopy(raw_spec())
    t = data["torch"]["2.6.0"]
    t["env"]["RVT_LAYER"] = "common"
    t["env_source"]["debian"]["RVT_LAYER"] = "source"
    t["env_target"]["riscv64"]["RVT_LAYER"] = "target"
    tv = parse_spec(data).version("2.6.0")
    assert tv.resolve_env(provider="upstream", arch="aarch64")["RVT_LAYER"] == "common"
    assert tv.resolve_env(provider="debian", arch="aarch64")["RVT_LAYER"] == "source"
    assert tv.resolve_env(provider="debian", arch="riscv64")["RVT_LAYER"] == "target"
    env = tv.resolve_env(provider="debian", arch="riscv64", overrides={"RVT_LAYER": "cli"})
    assert env["RVT_LAYER"] == "cli"
    with pytest.raises(UsageError):
        tv.resolve_env(provider="debian", arch="riscv64", overrides={"bad name": "1"})


def test_required_flags_resolved_for_every_target() -> None:
    from rvtorch.targets import matrix

    for t in matrix().targets:
        for provider in ("upstream", "debian"):
            env = torch_version().resolve_env(provider=provider, arch=t.arch)
            for key, value in {
                "USE_CUDA": "0",
                "USE_MKLDNN": "0",
                "USE_FBGEMM": "0",
                "USE_XNNPACK": "0",
                "USE_NNPACK": "0",
                "USE_DISTRIBUTED": "1",
                "USE_GLOO": "1",
                "BLAS": "OpenBLAS",
                "BUILD_TEST": "0",
            }.items():
                assert env[key] == value, (t.arch, provider, key)
            # setup.py skips its submodule check when USE_SYSTEM_LIBS is set to anything
            assert ("USE_SYSTEM_LIBS" in env) == (provider == "debian")


# ------------------------------------------------------------------------------------ plan
def test_plan_resolves_cross_env_and_cmake_flags() -> None:
    plan = build.make_plan("riscv64", provider="debian", jobs=2, overrides={"USE_OPENMP": "0"})
    env = plan.env
    assert env["CC"] == "riscv64-linux-gnu-gcc-14"
    assert env["_PYTHON_SYSCONFIGDATA_NAME"] == "_sysconfigdata__linux_riscv64-linux-gnu"
    assert env["PYTORCH_BUILD_VERSION"] == "2.6.0+riscv64"
    assert env["MAX_JOBS"] == "2" and env["CMAKE_CXX_COMPILER_LAUNCHER"] == "ccache"
    assert "-DUSE_OPENMP=0" in plan.cmake and "-DBLAS=OpenBLAS" in plan.cmake
    assert "-DCC=riscv64-linux-gnu-gcc-14" not in plan.cmake
    assert [p["file"] for p in plan.patches] == [
        p.file for p in series_for(torch_version()).patches
    ]
    assert plan.source["files"][0]["sha256"] == torch_version().debian.orig.sha256
    assert plan.tree.endswith("-riscv64") and plan.validate_cpus == ["rv64", "rvv128", "rvv256"]
    json.dumps(plan.to_json())  # serialisable


def test_plan_per_target_and_stage() -> None:
    a = build.make_plan("aarch64", provider="debian", stage="partial", cache="sccache")
    assert (
        a.env["CC"] == "aarch64-linux-gnu-gcc-14"
        and a.env["_PYTHON_HOST_PLATFORM"] == "linux-aarch64"
    )
    assert a.targets and a.targets[0] == "c10" and a.env["CMAKE_C_COMPILER_LAUNCHER"] == "sccache"
    with pytest.raises(UsageError):
        build.make_plan("riscv64", provider="debian", jobs=0)


def test_default_jobs_bounded_by_memory() -> None:
    assert build.default_jobs(cores=2, mem_bytes=24 << 30) == 2
    assert build.default_jobs(cores=64, mem_bytes=24 << 30) == 8
    assert build.default_jobs(cores=4, mem_bytes=1 << 30) == 1


def test_dry_run_cli_prints_only_json() -> None:
    r = run_cli(
        "build",
        "--arch",
        "riscv64",
        "--source",
        "debian",
        "--dry-run",
        "--jobs",
        "3",
        "--set",
        "USE_KINETO=1",
    )
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["env"]["USE_KINETO"] == "1" and plan["jobs"] == 3
    assert plan["env"]["USE_XNNPACK"] == "0"


@pytest.mark.parametrize(
    "args",
    [
        ["--arch", "riscv46"],
        ["--arch", "riscv64", "--torch-version", "9.9"],
        ["--arch", "riscv64", "--set", "NOEQUALS"],
    ],
)
def test_bad_build_input_exits_2(args: list[str]) -> None:
    r = run_cli("build", "--source", "debian", "--dry-run", *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "error:" in r.stderr


# -------------------------------------------------------------------------------- progress
def test_progress_eta() -> None:
    p = build.Progress()
    assert not p.feed("-- Configuring done")
    assert p.feed("[10/110] Building CXX object x.o", now=0.0)
    assert p.eta(now=0.0) is None
    p.feed("[60/110] Building CXX object y.o", now=100.0)
    assert p.eta(now=100.0) == pytest.approx(100.0)
    assert "[60/110]" in p.line(100.0, now=100.0) and "ETA 0:01:40" in p.line(100.0, now=100.0)
    p.feed("[1/1319] Building c10", now=200.0)  # the next ninja run: the rate starts over
    assert p.eta(now=200.0) is None and p.total == 1319
    p.feed("[11/1319] Building x", now=300.0)
    assert p.eta(now=300.0) == pytest.approx(1308 * 10.0)


def test_parse_steps() -> None:
    log = "x\nrvtorch: step configure 100\n...\nrvtorch: step compile 160\nrvtorch: step done 400\n"
    assert build.parse_steps(log) == {"configure": 60.0, "compile": 240.0}


# ------------------------------------------------------------------------- patch manifest
def test_manifest_lists_every_patch_and_every_listed_file_exists() -> None:
    tv = torch_version()
    series = series_for(tv)
    on_disk = sorted(p.name for p in tv.patch_dir.glob("*.patch"))
    assert [p.file for p in series.patches] == on_disk
    for p in series.patches:
        assert re.fullmatch(r"\d{4}-[\w.-]+\.patch", p.file)
        text = p.path.read_text()
        assert text.startswith("From ") and "Subject: [PATCH" in text
        for word in ("Symptom", "Cause", "Upstream"):
            assert word in text, (p.file, word)


def test_manifest_rejects_unlisted_and_missing(tmp_path: Path) -> None:
    src = torch_version().patch_dir
    d = tmp_path / "series"
    shutil.copytree(src, d)
    (d / "0099-extra.patch").write_text("From x\n")
    with pytest.raises(UsageError, match=r"0099-extra\.patch is not listed"):
        load_series(d)
    (d / "0099-extra.patch").unlink()
    first = sorted(d.glob("*.patch"))[0]
    first.unlink()
    with pytest.raises(UsageError, match="does not exist"):
        load_series(d)


def test_failure_names_patch_and_hunk() -> None:
    p = series_for(torch_version()).patches[0]
    text = p.path.read_text()
    target = re.search(r"^\+\+\+ b/(.+)$", text, re.M).group(1)
    start = int(re.search(r"^@@ -(\d+)", text, re.M).group(1))
    msg = describe_failure(
        p, f"error: patch failed: {target}:{start}\nerror: {target}: patch does not apply\n"
    )
    assert p.file in msg and "hunk #1" in msg and target in msg


# --------------------------------------------------------------------------- mirror + fetch
def test_mirror_precedence_and_apt_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: trixie\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: trixie-security\n"
    )
    monkeypatch.delenv("RVTORCH_DEBIAN_MIRROR", raising=False)
    assert sources.debian_mirror(apt_etc=etc) == "http://mirror.example/debian"
    (etc / "sources.list").write_text(
        "deb [arch=amd64] http://first.example/debian bookworm main\n"
    )
    assert sources.debian_mirror(apt_etc=etc) == "http://first.example/debian"
    monkeypatch.setenv("RVTORCH_DEBIAN_MIRROR", "http://env.example/debian/")
    assert sources.debian_mirror(apt_etc=etc) == "http://env.example/debian"
    assert sources.debian_mirror("http://cli.example/d", apt_etc=etc) == "http://cli.example/d"
    monkeypatch.delenv("RVTORCH_DEBIAN_MIRROR")
    with pytest.raises(UsageError, match=r"no Debian mirror"):
        sources.debian_mirror(apt_etc=tmp_path / "none")


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with Range support, optionally cutting the first response short."""

    cut_after: int | None = None
    ranges: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        rng = self.headers.get("Range")
        type(self).ranges.append(rng or "")
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        body = data[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = type(self).cut_after
        if cut is not None:
            type(self).cut_after = None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _RangeHandler.ranges = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


def test_download_resumes_and_verifies(server: tuple[str, Path], tmp_path: Path) -> None:
    url, root = server
    payload = bytes(range(256)) * 4096
    (root / "f.tar.xz").write_bytes(payload)
    pin = PinnedFile(name="f.tar.xz", sha256=hashlib.sha256(payload).hexdigest(), size=len(payload))
    dest = tmp_path / "cache" / "f.tar.xz"
    dest.parent.mkdir()
    _RangeHandler.cut_after = 100_000
    # One attempt per run: the server's early close ends this run with the partial file kept.
    with pytest.raises(SourceError, match=r"interrupted at 100000 of 1048576") as exc:
        sources.download(f"{url}/f.tar.xz", dest, pin, attempts=1)
    assert "rerun to resume" in exc.value.one_line()
    part = dest.with_name("f.tar.xz.part")
    assert not dest.exists() and part.stat().st_size == 100_000
    sources.download(f"{url}/f.tar.xz", dest, pin)
    assert dest.read_bytes() == payload and not part.exists()
    assert _RangeHandler.ranges == ["", "bytes=100000-"]


def test_hash_mismatch_deletes_and_exits_3(server: tuple[str, Path], tmp_path: Path) -> None:
    url, root = server
    (root / "g.tar.xz").write_bytes(b"corrupted" * 100)
    pin = PinnedFile(name="g.tar.xz", sha256="0" * 64, size=900)
    dest = tmp_path / "g.tar.xz"
    with pytest.raises(SourceError) as exc:
        sources.download(f"{url}/g.tar.xz", dest, pin)
    assert exc.value.exit_code == 3 and "deleted" in str(exc.value)
    assert not dest.exists() and not dest.with_name("g.tar.xz.part").exists()
    # a corrupt file already in the cache is caught too, and deleted
    dest.write_bytes(b"corrupted" * 100)
    with pytest.raises(SourceError, match="sha256"):
        sources.download(f"{url}/g.tar.xz", dest, pin)
    assert not dest.exists()


def test_corrupt_tarball_is_a_source_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.tar.xz"
    bad.write_bytes(b"\xfd7zXZ\x00garbage")
    with pytest.raises(SourceError, match="corrupt"):
        sources._extract(bad, tmp_path / "out")


def _tarball(path: Path, members: dict[str, str]) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:xz") as tf:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_restore_vendored_top_dir_or_root(tmp_path: Path) -> None:
    """A vendored tarball lands at its third_party/ directory, from its top directory or (tree
    ".") from its root; a missing top directory or an occupied destination is a source error."""
    work = tmp_path / "work"
    tree = tmp_path / "tree"
    (tree / "third_party" / "gloo").mkdir(parents=True)  # an empty submodule dir, as in git
    flat = _tarball(tmp_path / "gloo.tar.xz", {"CMakeLists.txt": "project(gloo)", "gloo/a.h": ""})
    sources._restore_vendored(flat, ".", tree / "third_party/gloo", work)
    assert (tree / "third_party/gloo/gloo/a.h").exists()
    topped = _tarball(tmp_path / "h.tar.xz", {"cpp-httplib-1/httplib.h": "//"})
    sources._restore_vendored(topped, "cpp-httplib-1", tree / "third_party/cpp-httplib", work)
    assert (tree / "third_party/cpp-httplib/httplib.h").read_text() == "//"
    with pytest.raises(SourceError, match="no top directory other/"):
        sources._restore_vendored(topped, "other", tree / "third_party/x", work)
    with pytest.raises(SourceError, match="not empty"):
        sources._restore_vendored(flat, ".", tree / "third_party/gloo", work)


def test_staging_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RVTORCH_CACHE", str(tmp_path / "cache"))
    dest = tmp_path / "tree"
    with pytest.raises(RuntimeError), sources.staging(dest) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("killed")
    assert not dest.exists() and list((tmp_path / "cache" / "staging").iterdir()) == []
    with sources.staging(dest) as tmp:
        (tmp / "whole").write_text("x")
    assert (dest / "whole").exists()


def test_publish_is_atomic_with_checksum_and_info(tmp_path: Path) -> None:
    wheel = tmp_path / "torch-2.6.0+riscv64-cp313-cp313-linux_riscv64.whl"
    wheel.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    out = tmp_path / "dist"
    res = build.publish(wheel, out, {"steps": {"compile": 1.0}})
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert res["sha256"] == digest
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [wheel.name, f"{wheel.name}.sha256", f"{wheel.name}.build-info.json"])
    assert (out / f"{wheel.name}.sha256").read_text() == f"{digest}  {wheel.name}\n"
    info = json.loads((out / f"{wheel.name}.build-info.json").read_text())
    assert info["sha256"] == digest and info["steps"] == {"compile": 1.0}


def test_build_script_per_stage() -> None:
    full = build.build_script(build.make_plan("riscv64", provider="debian", stage="full"))
    assert "setup.py bdist_wheel --dist-dir /rvtorch/out" in full and "ccache" in full
    part = build.build_script(build.make_plan("riscv64", provider="debian", stage="partial",
                                              targets=["c10"]))
    assert "cmake --build build --target c10" in part and "bdist_wheel" not in part
    assert "flatc --cpp" in part and ".rvtorch-prepare-" in part  # debian prepare step, once
    conf = build.build_script(build.make_plan("riscv64", provider="debian", stage="configure",
                                              cache="none"))
    assert "--cmake-only" in conf and "cmake --build" not in conf and "ccache" not in conf


def test_changed_flags_or_cache_reconfigure_an_existing_tree() -> None:
    """setup.py ignores a changed environment once CMakeCache.txt exists: the script must force
    a reconfigure when the CMake-visible flags or the compiler cache differ from the last run."""
    base = build.make_plan("riscv64", provider="debian", stage="partial")
    same = build.make_plan("riscv64", provider="debian", stage="full")
    other_cache = build.make_plan("riscv64", provider="debian", stage="partial", cache="sccache")
    other_flag = build.make_plan("riscv64", provider="debian", stage="partial",
                                 overrides={"USE_OPENMP": "0"})
    d = build.configure_digest
    assert d(base) == d(same)
    assert len({d(base), d(other_cache), d(other_flag)}) == 3
    script = build.build_script(base)
    assert f"[ ! -e build/.rvtorch-configure-{d(base)} ]" in script
    assert "setup.py build --cmake-only $rerun" in script and "rerun=--cmake" in script
    sc = build.build_script(other_cache)
    assert sc.index("sccache --stop-server") < sc.index("sccache --start-server")
    assert "trap 'sccache --stop-server" in sc


def test_the_target_cxx_abi_is_given_not_probed() -> None:
    """A fresh machine has no binfmt entry: CheckAbi.cmake's probe cannot run and guesses the
    old ABI, and the last links fail an hour later. The plan gives it to CMake explicitly."""
    for arch in ("riscv64", "aarch64"):
        plan = build.make_plan(arch, provider="debian", stage="configure")
        assert "-DGLIBCXX_USE_CXX11_ABI=1" in plan.cmake


def test_binfmt_state_is_part_of_the_configure_digest() -> None:
    plan = build.make_plan("riscv64", provider="debian", stage="configure")
    assert build.configure_digest(plan, "binfmt") != build.configure_digest(plan, "none")
    script = build.build_script(plan, "configure", binfmt="none")
    assert f".rvtorch-configure-{build.configure_digest(plan, 'none')}" in script
    assert "bdist_wheel" not in script and "setup.py build --cmake-only" in script
    assert "setup.py build --cmake-only" not in build.build_script(plan, "compile")


def test_a_configure_that_could_not_run_a_probe_fails(tmp_path: Path) -> None:
    plan = build.make_plan("riscv64", provider="debian", stage="configure")
    (tmp_path / "build").mkdir()
    cache = tmp_path / "build" / "CMakeCache.txt"
    cache.write_text("GLIBCXX_USE_CXX11_ABI:UNINITIALIZED=1\n")
    assert build.check_configure(plan, tmp_path, "-- ok\n") == {"GLIBCXX_USE_CXX11_ABI": "1"}
    log = "CMake Warning at cmake/CheckAbi.cmake:24 (message):\n  Could not run ABI Check: 2\n"
    with pytest.raises(BuildError) as exc:
        build.check_configure(plan, tmp_path, log)
    assert exc.value.exit_code == 4 and "Could not run ABI Check" in exc.value.one_line()
    cache.write_text("GLIBCXX_USE_CXX11_ABI:STRING=0\n")
    with pytest.raises(BuildError, match="GLIBCXX_USE_CXX11_ABI=0"):
        build.check_configure(plan, tmp_path, "")
