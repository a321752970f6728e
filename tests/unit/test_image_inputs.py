"""The toolchain image's inputs: content hash, tags, Dockerfile and toolchain files vs targets.toml.

No containers here: these tests read files and compute hashes only.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from rvtorch import image, toolchain
from rvtorch.errors import UsageError
from rvtorch.targets import matrix

ROOT = Path(__file__).resolve().parents[2]
ARCHES = matrix().arches


def _copy_inputs(dest: Path) -> None:
    for arch in ARCHES:
        for rel in image.image_inputs(matrix().target(arch)):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)


@pytest.mark.parametrize("arch", ARCHES)
def test_hash_is_stable_and_input_sensitive(arch: str, tmp_path: Path) -> None:
    t = matrix().target(arch)
    _copy_inputs(tmp_path)
    h1 = image.content_hash(t, base_id="sha256:base", root=tmp_path)
    assert h1 == image.content_hash(t, base_id="sha256:base", root=tmp_path)
    assert re.fullmatch(r"[0-9a-f]{64}", h1)
    # Each input file, the base image and the build arguments move the hash.
    for rel in image.image_inputs(t):
        p = tmp_path / rel
        original = p.read_bytes()
        p.write_bytes(original + b"\n# changed\n")
        assert image.content_hash(t, base_id="sha256:base", root=tmp_path) != h1, rel
        p.write_bytes(original)
    assert image.content_hash(t, base_id="sha256:other", root=tmp_path) != h1
    assert image.content_hash(t, base_id="sha256:base", root=tmp_path,
                              extra_args={"DEBIAN_MIRROR": "http://m/debian"}) != h1


def test_each_target_has_its_own_hash_and_tags() -> None:
    hashes = {a: image.content_hash(matrix().target(a), base_id="b") for a in ARCHES}
    assert len(set(hashes.values())) == len(ARCHES)
    for arch, h in hashes.items():
        refs = image.ImageRefs(arch, h)
        assert refs.good == f"{matrix().project.image}:{arch}-{h[:16]}"
        assert refs.untested == refs.good + "-untested"
        assert refs.alias == f"{matrix().project.image}:{arch}"


def test_inputs_of_a_target_do_not_include_other_targets_files() -> None:
    for arch in ARCHES:
        t = matrix().target(arch)
        inputs = image.image_inputs(t)
        for other in matrix().targets:
            if other.arch != arch:
                assert f"toolchains/{other.triple}.cmake" not in inputs


def test_stage_context_holds_exactly_the_inputs(tmp_path: Path) -> None:
    t = matrix().target(ARCHES[0])
    image.stage_context(t, tmp_path)
    staged = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert staged == sorted(image.context_files(t))
    assert set(image.image_inputs(t)) <= set(staged)
    assert all(p in image.image_inputs(t) or p.startswith("certs/") for p in staged)
    assert (tmp_path / "certs").is_dir()


def test_site_ca_certificates_are_staged_and_hashed(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    t = matrix().target(ARCHES[0])
    certs = tmp_path / "ca"
    certs.mkdir()
    monkeypatch.setenv("RVTORCH_CA_CERTS", str(certs))
    h0 = image.content_hash(t, base_id="b")
    (certs / "site.crt").write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    (certs / "notes.txt").write_text("not a certificate")
    assert "certs/site.crt" in image.context_files(t)
    assert "certs/notes.txt" not in image.context_files(t)
    assert image.content_hash(t, base_id="b") != h0


def test_build_args_match_dockerfile_args() -> None:
    text = (ROOT / image.DOCKERFILE).read_text()
    declared = set(re.findall(r"^ARG (\w+)", text, flags=re.M))
    for arch in ARCHES:
        args = image.build_args(matrix().target(arch))
        assert set(args) <= declared
        assert args["CROSS_TRIPLE"] == matrix().target(arch).triple
    # What build_image passes besides the target's arguments.
    assert {"BASE_IMAGE", "DEBIAN_MIRROR", "RVTORCH_REVISION", "RVTORCH_CREATED"} <= declared
    assert re.search(rf"^FROM \S+ AS {image.FINAL_STAGE}$", text, flags=re.M)


def test_dockerfile_hard_codes_no_target() -> None:
    text = (ROOT / image.DOCKERFILE).read_text()
    for t in matrix().targets:
        for word in {t.arch, t.triple, t.debian_arch, t.qemu_binary}:
            assert not re.search(rf"\b{re.escape(word)}\b", text), word
    # Nor the project's versions: suite, gcc and Python come from targets.toml too.
    p = matrix().project
    for word in (p.suite, p.python, f"gcc-{p.gcc}", f"={p.gcc}"):
        assert word not in text, word


def test_dockerfile_copies_only_staged_inputs() -> None:
    text = (ROOT / image.DOCKERFILE).read_text()
    sources = re.findall(r"^COPY (\S+) ", text, flags=re.M)
    assert sources
    for arch in ARCHES:
        t = matrix().target(arch)
        inputs = [*image.image_inputs(t), "certs/"]
        for src in sources:
            src = src.replace("${CROSS_TRIPLE}", t.triple)
            assert any(i == src or i.startswith(src.rstrip("/") + "/") for i in inputs), src


def test_committed_toolchain_files_match_targets_toml() -> None:
    assert toolchain.stale_files() == []


@pytest.mark.parametrize("arch", ARCHES)
def test_cmake_toolchain_file_values(arch: str) -> None:
    t = matrix().target(arch)
    text = (ROOT / "toolchains" / f"{t.triple}.cmake").read_text()
    assert f"set(CMAKE_SYSTEM_PROCESSOR {t.cmake_system_processor})" in text
    assert f"set(CMAKE_C_FLAGS_INIT \"{t.cflags}\")" in text
    assert f"set(CMAKE_CXX_COMPILER {t.triple}-g++-{matrix().project.gcc})" in text
    assert f"-march={t.march}" in text
    assert f"NAMES {t.qemu_binary}" in text
    assert f"-cpu;{t.scalar_models[0].qemu_cpu}" in text
    for mode in ("LIBRARY ONLY", "INCLUDE ONLY", "PACKAGE ONLY", "PROGRAM NEVER"):
        assert f"CMAKE_FIND_ROOT_PATH_MODE_{mode})" in text


@pytest.mark.parametrize("arch", ARCHES)
def test_conan_host_profile_values(arch: str) -> None:
    t = matrix().target(arch)
    m = matrix()
    text = (ROOT / "toolchains/conan" / f"linux-{t.conan_arch}-gcc{m.project.gcc}").read_text()
    assert f"\narch={t.conan_arch}\n" in text
    assert f"compiler.version={m.project.gcc}\n" in text
    assert f'"cpp": "{t.triple}-g++-{m.project.gcc}"' in text
    assert "tools.build.cross_building:can_run=True" in text
    assert f"user.rvtorch:emulator={t.qemu_binary} -L / -cpu " in text
    build = (ROOT / "toolchains/conan" / f"linux-x86_64-gcc{m.project.gcc}").read_text()
    assert "\narch=x86_64\n" in build


def test_stale_toolchain_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for rel, text in toolchain.rendered_files().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    first = next(iter(toolchain.rendered_files()))
    (tmp_path / first).write_text("# edited by hand\n")
    assert toolchain.stale_files(tmp_path) == [first]
    monkeypatch.setenv("RVTORCH_ROOT", str(tmp_path))
    with pytest.raises(UsageError, match="out of date"):
        toolchain.check_files()
    assert toolchain.write_files(tmp_path) == [first]
    assert toolchain.stale_files(tmp_path) == []


def _sysroot_packages() -> list[tuple[str, list[str]]]:
    entries = []
    for line in (ROOT / image.SYSROOT_PACKAGES).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, rest = line.partition(" ")
        arches = rest.strip().strip("[]").split() if rest else []
        entries.append((name, arches))
    return entries


def test_sysroot_packages_are_well_formed() -> None:
    entries = _sysroot_packages()
    names = [n for n, _ in entries]
    assert len(names) == len(set(names)), "duplicate package"
    debian_arches = {t.debian_arch for t in matrix().targets}
    for name, arches in entries:
        assert re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", name), name
        assert set(arches) <= debian_arches, (name, arches)
    # docs/facts.md: python3:<arch> replaces the build python; only libpython3.X-dev is allowed.
    for bad in ("python3", "python3-dev", "python3-minimal", "python3-numpy"):
        assert bad not in names
    assert f"libpython{matrix().project.python}-dev" in names
    assert "libzstd-dev" in names  # the self-test links it from the sysroot


def test_sysroot_package_arch_filter_matches_dockerfile() -> None:
    # The Dockerfile's awk filter: one-word lines for every arch, bracketed arches otherwise.
    text = (ROOT / image.DOCKERFILE).read_text()
    assert "gsub(/[][]/" in text and "sysroot-packages.txt" in text


def test_debian_mirror_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RVTORCH_DEBIAN_MIRROR", "http://env.example/debian/")
    assert image.debian_mirror("http://opt.example/debian") == "http://opt.example/debian"
    assert image.debian_mirror(None) == "http://env.example/debian"
    with pytest.raises(UsageError, match="not a URL"):
        image.debian_mirror("deb.example.org")
    monkeypatch.delenv("RVTORCH_DEBIAN_MIRROR")
    monkeypatch.setattr(image, "apt_debian_mirror", lambda: None)
    with pytest.raises(UsageError, match="no Debian mirror known"):
        image.debian_mirror(None)


@pytest.mark.parametrize("arch", ARCHES)
def test_elf_check_rejects_a_build_machine_binary(arch: str) -> None:
    from rvtorch.errors import BuildError

    host_binary = Path(shutil.which("true") or "/bin/true").resolve()
    with pytest.raises(BuildError, match=f"expected {matrix().target(arch).elf_machine}"):
        image.check_elf(host_binary, matrix().target(arch))


def test_cli_toolchains_check() -> None:
    from tests.conftest import run_cli

    r = run_cli("image", "toolchains", "--check")
    assert r.returncode == 0, r.stderr
    assert "up to date" in r.stdout


def test_mounts_below_and_remove_tree(tmp_path: Path) -> None:
    assert "/proc" in image.mounts_below(Path("/proc"))
    assert image.mounts_below(tmp_path) == []
    (tmp_path / "w" / "sub").mkdir(parents=True)
    (tmp_path / "w" / "sub" / "f").write_text("x")
    image.remove_tree(tmp_path / "w")
    assert not (tmp_path / "w").exists()
