"""rvtorch.wheelhouse: the pins, the wheel's requirements, the guest commands; no network."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rvtorch import wheelhouse
from rvtorch.errors import SourceError, UsageError
from rvtorch.targets import matrix, target
from tests.wheelkit import make_wheel

# torch 2.6.0's Requires-Dist as its setup.py writes it (plus an extra and a CUDA-only line).
TORCH_REQUIRES = [
    "filelock", "typing-extensions>=4.10.0", 'setuptools; python_version >= "3.12"',
    'sympy==1.13.1; python_version >= "3.9"', "networkx", "jinja2", "fsspec",
    'nvidia-cuda-runtime-cu12==12.4.127; platform_system == "Linux" and '
    'platform_machine == "x86_64"',
    'opt-einsum>=3.3; extra == "opt-einsum"',
]


def torch_like_wheel(tmp_path: Path, requires: list[str]) -> Path:
    meta = ("Metadata-Version: 2.1\nName: torch\nVersion: 2.6.0+riscv64\n"
            + "".join(f"Requires-Dist: {r}\n" for r in requires))
    return make_wheel(tmp_path, {"torch/__init__.py": "",
                                 "torch-2.6.0+riscv64.dist-info/METADATA": meta})


@pytest.mark.parametrize("arch", matrix().arches)
def test_every_arch_has_one_pin_per_package_and_pip(arch: str) -> None:
    got = wheelhouse.pins(arch)
    names = [p.name for p in got]
    assert len(names) == len(set(names))
    assert "pip" in names and "markupsafe" in names
    # MarkupSafe has a C extension: the pinned file is the target's, never another arch's.
    (ms,) = [p for p in got if p.name == "markupsafe"]
    assert ms.arch == arch and target(arch).wheel_platform.rsplit("_", 1)[-1] in ms.file
    assert all(len(p.sha256) == 64 for p in got)


def test_platform_tags_cover_older_manylinux() -> None:
    tags = wheelhouse.platform_tags(target("aarch64"))
    assert tags[0] == target("aarch64").wheel_platform
    assert "manylinux_2_17_aarch64" in tags and "manylinux2014_aarch64" in tags
    assert "manylinux_2_16_aarch64" not in tags


def test_requirements_apply_markers_for_the_target(tmp_path: Path) -> None:
    wheel = torch_like_wheel(tmp_path, TORCH_REQUIRES)
    reqs = wheelhouse.wheel_requirements(wheel, "riscv64")
    assert not any("nvidia" in r or "opt-einsum" in r for r in reqs)
    assert any(r.startswith("sympy==1.13.1") for r in reqs) and len(reqs) == 7
    wheelhouse.check_covers(wheel, "riscv64")  # the pins satisfy torch 2.6.0


def test_an_unpinned_or_unsatisfied_requirement_is_a_usage_error(tmp_path: Path) -> None:
    wheel = torch_like_wheel(tmp_path, [*TORCH_REQUIRES[:3], "sympy==1.13.3", "numpy"])
    with pytest.raises(UsageError, match=r"sympy==1.13.3 \(pinned: 1.13.1\).*numpy \(pinned: "
                       r"nothing\)"):
        wheelhouse.check_covers(wheel, "riscv64")


def test_gather_reuses_verified_files_and_replaces_wrong_ones(tmp_path: Path,
                                                             monkeypatch) -> None:
    pins = [wheelhouse.Pin(name="a", version="1", file="a-1-py3-none-any.whl",
                           sha256=hashlib.sha256(b"good").hexdigest())]
    monkeypatch.setattr(wheelhouse, "pins", lambda arch: pins)
    fetched: list[str] = []

    def download(t, missing, dest):
        fetched.extend(p.file for p in missing)
        (dest / missing[0].file).write_bytes(b"good")

    monkeypatch.setattr(wheelhouse, "_download", download)
    dest = tmp_path / "wh"
    dest.mkdir()
    (dest / "a-1-py3-none-any.whl").write_bytes(b"tampered")
    assert wheelhouse.gather("riscv64", dest) == [dest / "a-1-py3-none-any.whl"]
    assert fetched == ["a-1-py3-none-any.whl"]  # the wrong file was not trusted
    assert wheelhouse.gather("riscv64", dest)[0].read_bytes() == b"good"
    assert fetched == ["a-1-py3-none-any.whl"]  # the right one is reused


def test_a_download_with_the_wrong_hash_is_refused(tmp_path: Path, monkeypatch) -> None:
    """pip's --require-hashes is the first check; ours is the second (a pin file typo, a pip
    that ignores hashes): the file is deleted and nothing lands in dest."""
    import subprocess

    pin = wheelhouse.Pin(name="a", version="1", file="a-1-py3-none-any.whl", sha256="0" * 64)

    def fake_pip(cmd, **kw):
        out = Path(cmd[cmd.index("--dest") + 1])
        out.mkdir(parents=True)
        (out / pin.file).write_bytes(b"other")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(wheelhouse.subprocess, "run", fake_pip)
    dest = tmp_path / "wh"
    dest.mkdir()
    with pytest.raises(SourceError, match=r"sha256 .* != pinned"):
        wheelhouse._download(target("riscv64"), [pin], dest)
    assert list(dest.iterdir()) == []


def test_install_commands_are_offline_and_use_only_the_wheelhouse() -> None:
    venv_cmd, pip_cmd = wheelhouse.install_commands(
        "/usr/bin/python3", "/w/venv", "/w/wh", "/w/torch.whl", pip_whl="/w/wh/pip.whl")
    assert venv_cmd == ["/usr/bin/python3", "-c", wheelhouse.VENV_SCRIPT, "/w/venv"]
    assert "EnvBuilder(with_pip=False)" in wheelhouse.VENV_SCRIPT
    assert "system_site_packages" not in wheelhouse.VENV_SCRIPT
    assert pip_cmd[:3] == ["/w/venv/bin/python3", "/w/wh/pip.whl/pip", "install"]
    assert "--no-index" in pip_cmd and pip_cmd[pip_cmd.index("--find-links") + 1] == "/w/wh"
    assert pip_cmd[-1] == "/w/torch.whl"
    assert wheelhouse.PIP_ENV["PIP_CONFIG_FILE"] == "/dev/null"
