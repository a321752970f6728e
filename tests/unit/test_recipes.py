"""The Conan recipes and the offline Conan home: parse, pins, and the errors users see.

Every test uses its own RVTORCH_CACHE (so its own CONAN_HOME) and never the network: sources are
either absent on purpose or served from a local file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cli

RECIPES = ROOT / "recipes"
NAMES = sorted(p.name for p in RECIPES.iterdir() if (p / "config.yml").is_file())
CONAN = str(Path(sys.executable).parent / "conan")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A host profile for resolving graphs; nothing is compiled with it.
PROFILE = """[settings]
os=Linux
arch=riscv64
compiler=gcc
compiler.version=14
compiler.libcxx=libstdc++11
build_type=Release
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private cache + Conan home written by rvtorch.conan; returns the env to run conan in."""
    monkeypatch.setenv("RVTORCH_CACHE", str(tmp_path / "cache"))
    from rvtorch import conan

    h = conan.setup_home()
    (tmp_path / "profile").write_text(PROFILE)
    env = conan.conan_env(h)
    env["RVTORCH_CACHE"] = str(tmp_path / "cache")
    return env


def conan_cmd(env: dict[str, str], *args: str, cwd: Path | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CONAN, *args], env=env, capture_output=True, text=True, cwd=cwd,
                          timeout=300, check=False)


def test_recipes_present() -> None:
    assert {"openblas", "fastflow", "libtorch"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_layout_conan_center_style(name: str) -> None:
    config = yaml.safe_load((RECIPES / name / "config.yml").read_text())
    assert config["versions"], f"{name}: config.yml lists no versions"
    for version, entry in config["versions"].items():
        folder = RECIPES / name / entry["folder"]
        for f in ("conanfile.py", "conandata.yml", "test_package/conanfile.py",
                  "test_package/CMakeLists.txt"):
            assert (folder / f).is_file(), f"{name}/{version}: {f} missing"


@pytest.mark.parametrize("name", NAMES)
def test_every_source_pinned(name: str) -> None:
    config = yaml.safe_load((RECIPES / name / "config.yml").read_text())
    data = yaml.safe_load((RECIPES / name / "all" / "conandata.yml").read_text())
    sources = data.get("sources") or {}
    for version, entry in sources.items():
        assert entry["url"].startswith("https://"), f"{name}/{version}: url"
        assert SHA256.match(entry["sha256"]), f"{name}/{version}: sha256 {entry['sha256']!r}"
        if "/debian/pool/" in entry["url"]:
            assert int(entry["size"]) > 0, f"{name}/{version}: Debian source needs its size"
    if name != "libtorch":  # libtorch packages a local wheel: nothing to download
        assert set(map(str, config["versions"])) == set(map(str, sources)), name


def test_debian_repacks_are_their_own_versions() -> None:
    data = yaml.safe_load((RECIPES / "openblas" / "all" / "conandata.yml").read_text())["sources"]
    for v in ("0.3.34", "0.3.29"):
        assert data[v]["sha256"] != data[f"{v}+ds"]["sha256"]
        assert data[f"{v}+ds"]["url"].endswith(f"openblas_{v}+ds.orig.tar.xz")


def test_fastflow_pin_matches_design() -> None:
    data = yaml.safe_load((RECIPES / "fastflow" / "all" / "conandata.yml").read_text())["sources"]
    (entry,) = data.values()
    assert "d476f66ab924d8d122f54b4b90aee00ef979aea8" in entry["url"]
    assert entry["sha256"] == "fca23ce672fe12fe7cdbfa6955a982d6eb75816a00d2d97a93deba9b351f9c53"


@pytest.mark.parametrize("name", NAMES)
def test_conan_inspect_offline(home: dict[str, str], name: str) -> None:
    r = conan_cmd(home, "inspect", str(RECIPES / name / "all"), "-f", "json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["name"] == name
    assert info["options_description"], f"{name}: options need descriptions"


def test_home_has_only_the_project_remote(home: dict[str, str]) -> None:
    r = conan_cmd(home, "remote", "list", "-f", "json")
    assert r.returncode == 0, r.stderr
    remotes = json.loads(r.stdout)
    assert [x["name"] for x in remotes] == ["rvtorch"]
    assert Path(home["CONAN_HOME"]).is_relative_to(Path(home["RVTORCH_CACHE"]))
    r = conan_cmd(home, "list", "openblas/*", "-r", "rvtorch", "-f", "json")
    assert r.returncode == 0, r.stderr
    assert "openblas/0.3.34+ds" in r.stdout


def test_setup_home_removes_conancenter(home: dict[str, str]) -> None:
    r = conan_cmd(home, "remote", "add", "conancenter", "https://center2.conan.io")
    assert r.returncode == 0, r.stderr
    from rvtorch import conan

    conan.setup_home()
    r = conan_cmd(home, "remote", "list", "-f", "json")
    assert [x["name"] for x in json.loads(r.stdout)] == ["rvtorch"]


def _graph(home: dict[str, str], tmp: Path, *opts: str) -> subprocess.CompletedProcess[str]:
    return conan_cmd(home, "graph", "info", "--requires=openblas/0.3.34+ds", "-r", "rvtorch",
                     "-pr:a", str(tmp / "profile"), *opts)


def test_unknown_option_value_is_clear(home: dict[str, str], tmp_path: Path) -> None:
    r = _graph(home, tmp_path, "-o", "openblas/*:threading=tbb")
    assert r.returncode != 0
    assert "'tbb' is not a valid 'options.threading' value" in r.stderr
    assert "openmp" in r.stderr  # the valid values are listed


@pytest.mark.parametrize(("opts", "message"), [
    (("-o", "openblas/*:dynamic_arch=False"), "a cross build must name a TARGET"),
    (("-o", "openblas/*:dynamic_list=riscv64_zvl128b"), "is not an OpenBLAS TARGET name"),
    (("-s", "compiler.version=12"), "need GCC >= 14"),
    (("-o", "openblas/*:precisions=sx"), "precisions='sx'"),
    (("-o", "openblas/*:precisions=sd"), "dynamic_arch needs every precision"),
    (("-o", "openblas/*:dynamic_arch=False", "-o", "openblas/*:target=RISCV64_GENERIC",
      "-o", "openblas/*:precisions=sd", "-o", "openblas/*:build_lapack=True"),
     "build_lapack needs every precision"),
])
def test_invalid_configurations_explain(home: dict[str, str], tmp_path: Path,
                                        opts: tuple[str, ...], message: str) -> None:
    r = _graph(home, tmp_path, "-s:b", "arch=x86_64", *opts)
    assert message in r.stdout + r.stderr, r.stdout + r.stderr


def test_fastflow_distributed_needs_what_the_archive_lacks(home: dict[str, str],
                                                          tmp_path: Path) -> None:
    r = conan_cmd(home, "graph", "info", "--requires=fastflow/3.0.1+d476f66", "-r", "rvtorch",
                  "-pr:a", str(tmp_path / "profile"), "-o", "fastflow/*:distributed=True")
    assert "MTCL" in r.stdout + r.stderr


def _recipe_copy(tmp: Path, name: str, url: str | None = None) -> Path:
    """A copy of a recipe folder (``conan source`` writes into the recipe's own folder)."""
    dst = tmp / f"{name}-recipe"
    shutil.copytree(RECIPES / name / "all", dst, ignore=shutil.ignore_patterns("test_package"))
    if url is not None:
        data = yaml.safe_load((dst / "conandata.yml").read_text())
        for entry in data["sources"].values():
            entry["url"] = url
        (dst / "conandata.yml").write_text(yaml.safe_dump(data))
    return dst


def test_recipes_use_conans_own_get() -> None:
    """No copied fetch helper: every recipe with a source calls Conan's get(), which looks in the
    download cache (s/<sha256>) before the URL and checks the sha256."""
    for name in NAMES:
        text = (RECIPES / name / "all" / "conanfile.py").read_text()
        assert "def fetch_pinned" not in text, name
        if name != "libtorch":
            assert "get(self, " in text, name


def test_corrupted_cache_entry_is_deleted_and_reported(home: dict[str, str]) -> None:
    """Conan copies a download-cache entry unchecked, so rvtorch verifies it before any Conan
    run: a bad entry is deleted and the source reported missing (exit 3, one line)."""
    from rvtorch import conan

    src = conan.source_of("fastflow", "3.0.1+d476f66")
    bad = conan.cached_source(src)
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"not the fastflow archive")
    r = run_cli("deps", "fetch", "--only", "fastflow", "--offline",
                env={"RVTORCH_CACHE": home["RVTORCH_CACHE"], "RVTORCH_SOURCE_MIRROR": ""})
    assert r.returncode == 3, r.stderr
    assert src.sha256 in r.stderr.strip().splitlines()[-1]
    assert not bad.exists()


def test_recipe_wrong_file_fails_conans_sha256_check(home: dict[str, str],
                                                     tmp_path: Path) -> None:
    wrong = tmp_path / "d476f66ab924d8d122f54b4b90aee00ef979aea8.tar.gz"
    wrong.write_bytes(b"wrong bytes")
    recipe = _recipe_copy(tmp_path, "fastflow", url=wrong.as_uri())
    r = conan_cmd(home, "source", str(recipe), "--version", "3.0.1+d476f66")
    assert r.returncode != 0
    assert "fca23ce672fe12fe7cdbfa6955a982d6eb75816a00d2d97a93deba9b351f9c53" in r.stderr


def test_recipe_source_from_mirror_file(home: dict[str, str], tmp_path: Path) -> None:
    """A file:// URL whose file matches the pin unpacks (Conan's get())."""
    import hashlib
    import tarfile

    payload = tmp_path / "pkg" / "ff"
    payload.mkdir(parents=True)
    (payload / "ff.hpp").write_text("// header\n")
    archive = tmp_path / "fake.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(payload.parent, arcname="fastflow-x")
    recipe = _recipe_copy(tmp_path, "fastflow", url=archive.as_uri())
    data = yaml.safe_load((recipe / "conandata.yml").read_text())
    for entry in data["sources"].values():
        entry["sha256"] = hashlib.sha256(archive.read_bytes()).hexdigest()
    (recipe / "conandata.yml").write_text(yaml.safe_dump(data))
    r = conan_cmd(home, "source", str(recipe), "--version", "3.0.1+d476f66")
    assert r.returncode == 0, r.stderr
    assert (recipe / "src" / "ff" / "ff.hpp").is_file()


def test_cli_missing_source_exit_3(home: dict[str, str]) -> None:
    r = run_cli("deps", "fetch", "--only", "fastflow", "--offline",
                env={"RVTORCH_CACHE": home["RVTORCH_CACHE"], "RVTORCH_SOURCE_MIRROR": ""})
    assert r.returncode == 3, r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("rvtorch: error: fastflow/3.0.1+d476f66: source ")
    assert "fca23ce672fe12fe7cdbfa6955a982d6eb75816a00d2d97a93deba9b351f9c53" in err
    assert "--source-mirror" in err


def test_cli_source_mirror_wrong_file_exit_3(home: dict[str, str], tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "d476f66ab924d8d122f54b4b90aee00ef979aea8.tar.gz").write_bytes(b"wrong")
    r = run_cli("deps", "fetch", "--only", "fastflow", "--offline", "--source-mirror", str(mirror),
                env={"RVTORCH_CACHE": home["RVTORCH_CACHE"]})
    assert r.returncode == 3, r.stderr
    assert "pinned fca23ce6" in r.stderr
    from rvtorch import conan

    assert not conan.have_source(conan.source_of("fastflow", "3.0.1+d476f66"))
    leftovers = [p for p in conan.download_cache().joinpath("s").iterdir()]
    assert leftovers == [], leftovers  # nothing half-written left behind


def test_cli_source_mirror_good_file(home: dict[str, str], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The mirror import accepts exactly the pinned bytes (checked with a recipe we control)."""
    from rvtorch import conan

    blob = b"pinned bytes\n"
    import hashlib

    src = conan.RecipeSource(recipe="x", version="1", url="https://example.invalid/x-1.tar.gz",
                             sha256=hashlib.sha256(blob).hexdigest())
    mirror = tmp_path / "m"
    mirror.mkdir()
    (mirror / "x-1.tar.gz").write_bytes(blob)
    conan.ensure_sources([src], source_mirror=mirror, probe=False)
    assert conan.cached_source(src).read_bytes() == blob


def test_unknown_recipe_and_version_suggest(home: dict[str, str]) -> None:
    from rvtorch import conan
    from rvtorch.errors import UsageError

    with pytest.raises(UsageError) as exc:
        conan.recipe_versions("openbla")
    assert "did you mean 'openblas'" in exc.value.one_line()
    with pytest.raises(UsageError, match="no version"):
        conan.source_of("openblas", "0.3.35")


def test_openblas_spec_follows_targets_toml() -> None:
    from rvtorch import deps
    from rvtorch.targets import matrix

    for t in matrix().targets:
        spec = deps.openblas_spec(t)
        assert spec.options["dynamic_list"].split() == list(t.openblas_targets)
        models = json.loads(spec.confs["user.rvtorch:cpu_models"])
        assert set(models) == set(t.cpu_names)
        for c in t.cpu:
            assert models[c.name] == {"qemu_cpu": c.qemu_cpu, "openblas_core": c.openblas_core}
        static = deps.openblas_spec(t, static_target="GENERIC")
        assert static.options["dynamic_arch"] == "False" and "dynamic_list" not in static.options


def test_deps_cli_usage_errors(home: dict[str, str]) -> None:
    env = {"RVTORCH_CACHE": home["RVTORCH_CACHE"]}
    r = run_cli("deps", "build", "--arch", "riscv", env=env)
    assert r.returncode == 2 and "did you mean 'riscv64'" in r.stderr
    r = run_cli("deps", "show", "--arch", "riscv64", env=env)
    assert r.returncode == 2 and "rvtorch deps build --arch riscv64" in r.stderr


@pytest.mark.parametrize(("option", "message"), [
    ("threading=tbb", "'tbb' is not a valid 'options.threading' value. Possible values are"),
    ("precisions=sd", "invalid configuration: openblas: dynamic_arch needs every precision"),
])
def test_deps_build_bad_option_fails_before_any_container(home: dict[str, str], option: str,
                                                          message: str) -> None:
    """The graph is resolved on the host first: one line, exit 2, no image, no build."""
    r = run_cli("deps", "build", "--arch", "riscv64", "--openblas-option", option,
                env={"RVTORCH_CACHE": home["RVTORCH_CACHE"], "RVTORCH_ENGINE": "none-such"})
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("rvtorch: error: openblas/0.3.34+ds: ") and message in last, last


def test_cli_fetch_takes_the_mirror_from_the_environment(home: dict[str, str],
                                                         tmp_path: Path) -> None:
    """$RVTORCH_SOURCE_MIRROR works like --source-mirror (scripts/test.sh sets it for CI)."""
    import hashlib

    from rvtorch import conan

    src = conan.source_of("fastflow", "3.0.1+d476f66")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / src.filename).write_bytes(b"wrong")
    r = run_cli("deps", "fetch", "--only", "fastflow", "--offline",
                env={"RVTORCH_CACHE": home["RVTORCH_CACHE"], "RVTORCH_SOURCE_MIRROR": str(mirror)})
    assert r.returncode == 3 and f"pinned {src.sha256}" in r.stderr, r.stderr
    real = ROOT.parent / "shared" / "sources" / src.filename
    if not real.is_file():
        pytest.skip(f"{src.filename} (sha256 {src.sha256}) not in ../shared/sources")
    assert hashlib.sha256(real.read_bytes()).hexdigest() == src.sha256
    r = run_cli("deps", "fetch", "--only", "fastflow", "--offline",
                env={"RVTORCH_CACHE": home["RVTORCH_CACHE"],
                     "RVTORCH_SOURCE_MIRROR": str(real.parent)})
    assert r.returncode == 0, r.stderr
    assert conan.have_source(src)
