"""FastFlow FL runner and the digits shards file: everything that needs no container or QEMU."""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import pytest

from rvtorch import deps, digits, fastflow_fl
from rvtorch.errors import UsageError, ValidationError
from rvtorch.targets import matrix, target

TREE = Path(__file__).resolve().parents[2] / "src/rvtorch/validate/cpp/fastflow_fl"


# ------------------------------------------------------------------------------ shards file
@pytest.fixture(scope="module")
def four() -> digits.Shards:
    return digits.make_shards(4, seed=0)


def test_shards_cover_the_digits_once(four: digits.Shards) -> None:
    n_train = sum(len(s) for s in four.shards)
    assert n_train + len(four.test) == 1797  # scikit-learn's 8x8 digits
    assert all(len(s) >= digits.MIN_SHARD for s in four.shards)
    for s in (*four.shards, four.test):
        assert len(s.x) == len(s) * digits.N_FEATURES
        assert 0.0 <= min(s.x) and max(s.x) <= 1.0
    # stratified hold-out: every class is in the test set with about 20 % of its samples
    assert all(30 <= c <= 40 for c in four.test.label_counts())


def test_shards_are_non_iid(four: digits.Shards) -> None:
    # label skew: every shard's label distribution is far (total variation) from the overall one
    total = [sum(c) for c in zip(*(s.label_counts() for s in four.shards), strict=True)]
    n = sum(total)
    for s in four.shards:
        tv = 0.5 * sum(abs(c / len(s) - t / n) for c, t in zip(s.label_counts(), total,
                                                                 strict=True))
        assert tv > 0.2


def test_same_arguments_same_bytes(four: digits.Shards) -> None:
    assert digits.make_shards(4, seed=0).sha256() == four.sha256()
    assert digits.make_shards(4, seed=1).sha256() != four.sha256()


def test_roundtrip(tmp_path: Path, four: digits.Shards) -> None:
    path = digits.write_shards(four, tmp_path / "d.bin")
    back = digits.read_shards(path)
    assert back.to_bytes() == four.to_bytes()
    assert (back.seed, back.alpha, back.test_fraction) == (0, 0.5, 0.2)
    assert not list(tmp_path.glob(".d.bin.*"))  # no temp file left


def test_header_layout_is_the_documented_one(four: digits.Shards) -> None:
    raw = four.to_bytes()
    magic, nf, nc, ns, nt, seed, alpha_m, test_m = struct.unpack_from("<8s7I", raw)
    assert (magic, nf, nc, ns, seed, alpha_m, test_m) == (b"RVFLDIG1", 64, 10, 4, 0, 500, 200)
    sizes = struct.unpack_from("<4I", raw, 36)
    assert sum(sizes) + nt == 1797
    assert len(raw) == 36 + 16 + 4 * 65 * 1797


@pytest.mark.parametrize("cut", [10, 60, -4])
def test_truncated_or_bad_file_is_a_validation_error(tmp_path: Path, four: digits.Shards,
                                                     cut: int) -> None:
    p = tmp_path / "bad.bin"
    p.write_bytes(four.to_bytes()[:cut])
    with pytest.raises(ValidationError):
        digits.read_shards(p)
    p.write_bytes(b"NOTDIGIT" + four.to_bytes()[8:])
    with pytest.raises(ValidationError, match="not a shards file"):
        digits.read_shards(p)


@pytest.mark.parametrize("kw", [{"n_shards": 0}, {"n_shards": 200}, {"n_shards": 2, "alpha": 0},
                                {"n_shards": 2, "test_fraction": 1.0}])
def test_bad_split_arguments(kw: dict[str, float]) -> None:
    n = int(kw.pop("n_shards"))
    with pytest.raises(UsageError):
        digits.make_shards(n, **kw)


def test_ensure_shards_caches(tmp_path: Path) -> None:
    p = digits.ensure_shards(3, cache=tmp_path)
    mtime = p.stat().st_mtime_ns
    assert digits.ensure_shards(3, cache=tmp_path) == p
    assert p.stat().st_mtime_ns == mtime
    assert len(digits.read_shards(p).shards) == 3


# ------------------------------------------------------------------------------ runner bits
def test_conanfile_requires_the_versions_rvtorch_deps_pins() -> None:
    tree = ast.parse((TREE / "conanfile.py").read_text())
    requires: tuple[str, ...] = ()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "requires" for t in node.targets):
            requires = ast.literal_eval(node.value)
    assert set(requires) == {f"fastflow/{deps.FASTFLOW_VERSION}",
                             f"libtorch/{deps.LIBTORCH_VERSION}"}


def test_libtorch_pins_cover_every_target() -> None:
    version, pool, _ = fastflow_fl.libtorch_pins()
    assert version.startswith(deps.LIBTORCH_VERSION + "+")
    assert pool.startswith("pool/main/")
    for deb_arch in [t.debian_arch for t in matrix().targets] + ["amd64"]:  # + x86 reference
        mine = fastflow_fl.libtorch_debs(deb_arch)
        assert {d.name.split("_")[0] for d in mine} == {"libtorch-dev", "libtorch2.6"}
        assert all(d.name.endswith(f"_{deb_arch}.deb") and len(d.sha256) == 64 for d in mine)
    with pytest.raises(UsageError, match="no libtorch-dev"):
        fastflow_fl.libtorch_debs("mips64el")


def test_platforms() -> None:
    rv = fastflow_fl.platform_of("riscv64")
    assert rv.toolchain_file == "/opt/rvtorch/toolchains/riscv64-linux-gnu.cmake"
    host = fastflow_fl.platform_of(fastflow_fl.HOST)
    assert host.toolchain_file is None and host.debian_arch == "amd64"


def test_build_key_follows_sources_and_variant() -> None:
    a = fastflow_fl.build_key("riscv64", "core")
    assert a == fastflow_fl.build_key("riscv64", "core")
    assert a != fastflow_fl.build_key("riscv64", "fastflow")
    assert a != fastflow_fl.build_key("aarch64", "core")


def test_parse_json_lines_skips_noise() -> None:
    text = 'RISCV detected\n{"round": 1, "accuracy": 0.5}\n{broken\n[1]\n{"summary": {}}\n'
    assert fastflow_fl.parse_json_lines(text) == [{"round": 1, "accuracy": 0.5}, {"summary": {}}]


def _result(**summary: object) -> dict[str, object]:
    base = {"complete": True, "rounds": 3, "rounds_requested": 3, "models_equal": True,
            "final_hashes": ["a", "a"], "final_accuracy": 0.95, "accuracies": [0.3, 0.8, 0.95]}
    base.update(summary)
    return {"summary": base, "rounds": [{"round": 1, "start_equal": True}]}


def test_check_result_passes_a_good_run() -> None:
    assert fastflow_fl.check_result(_result()) == []


@pytest.mark.parametrize("bad, words", [
    ({"models_equal": False, "final_hashes": ["a", "b"]}, "differ"),
    ({"final_accuracy": 0.8}, "< 0.9"),
    ({"accuracies": [0.9, 0.9]}, "did not rise"),
    ({"complete": False, "rounds": 1}, "1 of 3"),
])
def test_check_result_reports_each_failure(bad: dict[str, object], words: str) -> None:
    problems = fastflow_fl.check_result(_result(**bad))
    assert any(words in p for p in problems), problems


def test_check_result_sees_a_round_with_unequal_models() -> None:
    r = _result()
    r["rounds"] = [{"round": 2, "start_equal": False}]
    assert any("round 2" in p for p in fastflow_fl.check_result(r))


def test_bad_usage_fails_before_building() -> None:
    with pytest.raises(UsageError, match="unknown scheme"):
        fastflow_fl.run_fastflow_fl("riscv64", scheme="ring")
    with pytest.raises(UsageError, match="at least 2 workers"):
        fastflow_fl.run_fastflow_fl("riscv64", workers=1)
    with pytest.raises(UsageError, match="unknown CPU model"):
        fastflow_fl.run_fastflow_fl("riscv64", cpu="pentium")
    with pytest.raises(UsageError, match="unknown arch"):
        fastflow_fl.run_fastflow_fl("mips", cpu="x")


def test_programs_never_include_a_fastflow_substitute() -> None:
    # The FastFlow programs include FastFlow's own header and the CMake build only finds the
    # real package: no local ff/ directory, no fallback branch.
    assert not (TREE / "ff").exists()
    cmake = (TREE / "CMakeLists.txt").read_text()
    assert "find_package(fastflow REQUIRED CONFIG)" in cmake
    assert "#include <ff/ff.hpp>" in (TREE / "fl_fastflow.hpp").read_text()
    for prog in fastflow_fl.SCHEMES.values():
        assert '#include "fl_fastflow.hpp"' in (TREE / f"{prog}.cpp").read_text()


def test_send_and_average_code_lives_once() -> None:
    """Both schemes send models and average a round through fl_fastflow.hpp, not copies."""
    shared = (TREE / "fl_fastflow.hpp").read_text()
    for name in ("MultiInput", "model_msg", "fedavg", "run_a2a", "train_fields"):
        assert name in shared
    for prog in fastflow_fl.SCHEMES.values():
        text = (TREE / f"{prog}.cpp").read_text()
        assert "new ParamMsg" not in text and "weighted_average" not in text
        assert "ff_minode_t" not in text and "ff::ff_a2a" not in text
        assert "flff::run_a2a" in text and "flff::fedavg" in text
    assert target("riscv64").triple == "riscv64-linux-gnu"


def test_validate_accepts_the_suite_on_request() -> None:
    from rvtorch import validation

    assert validation.parse_suites("smoke,fastflow-fl") == ("smoke", "fastflow-fl")
    assert "fastflow-fl" not in validation.SUITES  # not part of the default run


def test_suite_run_turns_errors_into_a_failed_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    from rvtorch.errors import SourceError

    def boom(arch: str, *, cpu: str | None = None) -> dict[str, object]:
        raise SourceError("libtorch-dev_2.6.0+dfsg-7_riscv64.deb: sha256 mismatch")

    monkeypatch.setattr(fastflow_fl, "suite_result", boom)
    run = fastflow_fl.suite_run("riscv64", cpu="rv64")
    assert not run.ok and "sha256 mismatch" in run.problem and run.result is None


def test_core_build_key_ignores_the_fastflow_files(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(TREE, tree)
    monkeypatch.setattr(fastflow_fl, "tree_dir", lambda: tree)
    core, ff = (fastflow_fl.build_key("riscv64", v) for v in ("core", "fastflow"))
    (tree / "fedavg_p2p.cpp").write_text("// changed\n")
    assert fastflow_fl.build_key("riscv64", "core") == core
    assert fastflow_fl.build_key("riscv64", "fastflow") != ff
    (tree / "fl_core.cpp").write_text("// changed\n")
    assert fastflow_fl.build_key("riscv64", "core") != core


# ----------------------------------------------------------------- the source mirror and skips
FF_FILE = "d476f66ab924d8d122f54b4b90aee00ef979aea8.tar.gz"
FF_SHA256 = "fca23ce672fe12fe7cdbfa6955a982d6eb75816a00d2d97a93deba9b351f9c53"


@pytest.fixture
def no_fastflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache, no source mirror and no network: FastFlow's source is nowhere."""
    from rvtorch import conan

    monkeypatch.setenv("RVTORCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(conan.SOURCE_MIRROR_ENV, raising=False)
    monkeypatch.setattr(conan, "reachable", lambda url, timeout=8: False)
    return tmp_path


def test_missing_fastflow_names_file_sha256_and_the_ways_in(no_fastflow: Path) -> None:
    reason = fastflow_fl.fastflow_missing()
    assert reason is not None
    assert FF_FILE in reason and FF_SHA256 in reason
    assert "RVTORCH_SOURCE_MIRROR=DIR" in reason and "--source-mirror DIR" in reason
    assert f"s/{FF_SHA256}" in reason


def test_source_mirror_env_provides_fastflow(no_fastflow: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A mirror file with the right name and the wrong bytes is refused, and says why."""
    from rvtorch import conan

    mirror = no_fastflow / "mirror"
    mirror.mkdir()
    (mirror / FF_FILE).write_bytes(b"not fastflow")
    monkeypatch.setenv(conan.SOURCE_MIRROR_ENV, str(mirror))
    reason = fastflow_fl.fastflow_missing()
    assert reason is not None and "pinned " + FF_SHA256 in reason
    assert not conan.have_source(fastflow_fl.fastflow_source())


def test_source_mirror_env_imports_the_pinned_file(no_fastflow: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from rvtorch import conan

    shared = Path(__file__).resolve().parents[3] / "shared" / "sources" / FF_FILE
    if not shared.is_file():
        pytest.skip(f"{FF_FILE} (sha256 {FF_SHA256}) is not in ../shared/sources beside the "
                    "checkout; set RVTORCH_SOURCE_MIRROR to a folder that has it")
    monkeypatch.setenv(conan.SOURCE_MIRROR_ENV, str(shared.parent))
    assert fastflow_fl.fastflow_missing() is None
    assert conan.have_source(fastflow_fl.fastflow_source())


def test_corrupted_cache_entry_is_dropped(no_fastflow: Path) -> None:
    """Conan copies a download-cache entry unchecked: rvtorch verifies it and deletes a bad one."""
    from rvtorch import conan

    src = fastflow_fl.fastflow_source()
    bad = conan.cached_source(src)
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"tampered")
    assert not conan.have_source(src)
    assert not bad.exists()


def test_requested_suite_without_fastflow_is_skipped_not_passed(
        no_fastflow: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Core checks pass, FastFlow's source is missing: the suite says skipped, and the report
    counts it against the run (so `rvtorch validate --suite fastflow-fl` exits non-zero)."""
    from rvtorch import validation

    core = {"wall_seconds": 1.0, "summary": {"torch_version": "2.6.0"}, "stderr_tail": "",
            "checks": [{"check": "loss_falls", "ok": True, "value": 0.1, "bound": 0.5}],
            "rounds": [{"round": 1, "accuracy": 0.95}]}
    monkeypatch.setattr(fastflow_fl, "run_core_test", lambda *a, **k: core)
    run = fastflow_fl.suite_run("riscv64", cpu="rv64")
    assert run.result is not None and run.result["status"] == "skipped"
    assert FF_SHA256 in run.result["skipped"]
    assert not run.ok and run.problem.startswith("skipped: ")
    report = {"arch": "riscv64", "runs": [{"cpu": "rv64", "suites": {
        "fastflow-fl": run.to_json()}}]}
    validation.summarise(report)
    assert not report["ok"] and "skipped" in report["failures"][0]
