"""Load and validate ``toolchains/torch.toml``: torch versions, source pins, patch series, flags.

An unknown key, provider or version raises :class:`UsageError` with a "did you mean" hint (exit 2).
The flag precedence chain lives in :meth:`TorchVersion.resolve_env` and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .errors import UsageError
from .paths import data_dir
from .targets import matrix, read_toml, suggest

PROVIDERS = ("upstream", "debian")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


@dataclass(frozen=True, kw_only=True)
class PinnedFile:
    """One file of a Debian source package, pinned by size and sha256."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True, kw_only=True)
class Overlay:
    """A directory copied from the Debian packaging into the source tree at unpack time."""

    source: str
    dest: str


@dataclass(frozen=True, kw_only=True)
class Vendored:
    """A third-party source the dfsg tarball leaves out, restored from its own Debian orig tarball.

    ``tree`` is the tarball's top directory; its contents become ``dest`` in the PyTorch tree.
    """

    pool: str
    file: PinnedFile
    tree: str
    dest: str


@dataclass(frozen=True, kw_only=True)
class UpstreamSource:
    git: str
    tag: str
    commit: str


@dataclass(frozen=True, kw_only=True)
class DebianSource:
    pool: str
    tree: str
    files: tuple[PinnedFile, ...]
    overlays: tuple[Overlay, ...]
    vendored: tuple[Vendored, ...]
    prepare: tuple[str, ...]
    sysroot_packages: tuple[str, ...]
    build_packages: tuple[str, ...]

    @property
    def orig(self) -> PinnedFile:
        return next(f for f in self.files if ".orig." in f.name)

    @property
    def packaging(self) -> PinnedFile | None:
        return next((f for f in self.files if f.name.endswith(".debian.tar.xz")), None)


@dataclass(frozen=True, kw_only=True)
class TorchVersion:
    version: str
    patches: str
    python: str
    upstream: UpstreamSource
    debian: DebianSource
    env: Mapping[str, str]
    env_source: Mapping[str, Mapping[str, str]]
    env_target: Mapping[str, Mapping[str, str]]

    @property
    def patch_dir(self) -> Path:
        return data_dir(".") / self.patches

    def resolve_env(
        self, *, provider: str, arch: str, overrides: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The build's environment flags; later layers win.

        Order: ``env`` < ``env_source.<provider>`` < ``env_target.<arch>`` < ``overrides`` (CLI).
        """
        if provider not in PROVIDERS:
            raise UsageError(
                f"unknown source provider {provider!r}", hint=suggest(provider, PROVIDERS)
            )
        resolved: dict[str, str] = {}
        resolved.update(self.env)
        resolved.update(self.env_source.get(provider, {}))
        resolved.update(self.env_target.get(arch, {}))
        for key, value in (overrides or {}).items():
            if not _ENV_NAME.match(key):
                raise UsageError(f"--set {key}={value}: not a valid variable name")
            resolved[key] = value
        return resolved


@dataclass(frozen=True, kw_only=True)
class TorchSpec:
    versions: Mapping[str, TorchVersion]

    @property
    def default_version(self) -> str:
        return sorted(self.versions, key=_version_key)[-1]

    def version(self, version: str | None) -> TorchVersion:
        version = version or self.default_version
        try:
            return self.versions[version]
        except KeyError:
            raise UsageError(
                f"unknown torch version {version!r}", hint=suggest(version, tuple(self.versions))
            ) from None


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", v))


def _keys(
    table: Mapping[str, Any], allowed: tuple[str, ...], where: str, required: bool = True
) -> None:
    for key in table:
        if key not in allowed:
            raise UsageError(f"{where}: unknown key {key!r}", hint=suggest(key, allowed))
    if required:
        missing = [k for k in allowed if k not in table]
        if missing:
            raise UsageError(f"{where}: missing key {missing[0]!r}")


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def _pinned(f: Any, where: str) -> PinnedFile:
    _keys(f, ("name", "size", "sha256"), where)
    if not isinstance(f["size"], int) or f["size"] <= 0:
        raise UsageError(f"{where}.size: expected a positive integer")
    if not _SHA256.match(_str(f["sha256"], f"{where}.sha256")):
        raise UsageError(f"{where}.sha256: expected 64 lower-case hex digits")
    return PinnedFile(name=_str(f["name"], f"{where}.name"), size=f["size"], sha256=f["sha256"])


def _env(table: Any, where: str) -> dict[str, str]:
    if not isinstance(table, dict):
        raise UsageError(f'{where}: expected a table of NAME = "value"')
    out: dict[str, str] = {}
    for key, value in table.items():
        if not _ENV_NAME.match(key):
            raise UsageError(f"{where}: {key!r} is not an environment variable name")
        if not isinstance(value, str):
            raise UsageError(f'{where}.{key}: values are strings (write "{value}")')
        out[key] = value
    return out


def _parse_version(version: str, t: Mapping[str, Any], where: str) -> TorchVersion:
    _keys(t, ("patches", "python", "source", "env", "env_source", "env_target"), where)
    src = t["source"]
    _keys(src, PROVIDERS, f"{where}.source")
    up = src["upstream"]
    _keys(up, ("git", "tag", "commit"), f"{where}.source.upstream")
    if not re.fullmatch(r"[0-9a-f]{40}", _str(up["commit"], f"{where}.source.upstream.commit")):
        raise UsageError(f"{where}.source.upstream.commit: expected 40 hex digits")
    upstream = UpstreamSource(
        git=_str(up["git"], "git"), tag=_str(up["tag"], "tag"), commit=up["commit"]
    )

    deb = src["debian"]
    dw = f"{where}.source.debian"
    _keys(deb, ("pool", "tree", "files", "overlays", "vendored", "prepare", "sysroot_packages",
                "build_packages"), dw)
    files = [_pinned(f, f"{dw}.files[{i}]") for i, f in enumerate(deb["files"])]
    if not any(".orig." in f.name for f in files):
        raise UsageError(f"{dw}.files: needs the .orig tarball")
    overlays = []
    for i, o in enumerate(deb["overlays"]):
        _keys(o, ("from", "to"), f"{dw}.overlays[{i}]")
        overlays.append(Overlay(source=_str(o["from"], "from"), dest=_str(o["to"], "to")))
    vendored = []
    for i, v in enumerate(deb["vendored"]):
        vw = f"{dw}.vendored[{i}]"
        _keys(v, ("pool", "name", "size", "sha256", "tree", "to"), vw)
        pin = _pinned({k: v[k] for k in ("name", "size", "sha256")}, vw)
        dest = _str(v["to"], f"{vw}.to")
        if not dest.startswith("third_party/") or ".." in dest.split("/"):
            raise UsageError(f"{vw}.to: expected a directory under third_party/, got {dest!r}")
        vendored.append(Vendored(pool=_str(v["pool"], f"{vw}.pool"), file=pin,
                                 tree=_str(v["tree"], f"{vw}.tree"), dest=dest))
    debian = DebianSource(
        pool=_str(deb["pool"], f"{dw}.pool"),
        tree=_str(deb["tree"], f"{dw}.tree"),
        files=tuple(files),
        overlays=tuple(overlays),
        vendored=tuple(vendored),
        prepare=_strs(deb["prepare"], f"{dw}.prepare"),
        sysroot_packages=_strs(deb["sysroot_packages"], f"{dw}.sysroot_packages"),
        build_packages=_strs(deb["build_packages"], f"{dw}.build_packages"),
    )

    env_source = {}
    for provider, table in t["env_source"].items():
        if provider not in PROVIDERS:
            raise UsageError(
                f"{where}.env_source: unknown provider {provider!r}",
                hint=suggest(provider, PROVIDERS),
            )
        env_source[provider] = _env(table, f"{where}.env_source.{provider}")
    arches = matrix().arches
    env_target = {}
    for arch, table in t["env_target"].items():
        if arch not in arches:
            raise UsageError(
                f"{where}.env_target: unknown arch {arch!r}", hint=suggest(arch, arches)
            )
        env_target[arch] = _env(table, f"{where}.env_target.{arch}")
    return TorchVersion(
        version=version,
        patches=_str(t["patches"], f"{where}.patches"),
        python=_str(t["python"], f"{where}.python"),
        upstream=upstream,
        debian=debian,
        env=_env(t["env"], f"{where}.env"),
        env_source=env_source,
        env_target=env_target,
    )


def parse_spec(data: Mapping[str, Any], where: str = "torch.toml") -> TorchSpec:
    _keys(data, ("torch",), where)
    versions = {v: _parse_version(v, t, f"{where}[torch.{v!r}]") for v, t in data["torch"].items()}
    if not versions:
        raise UsageError(f"{where}: lists no torch version")
    return TorchSpec(versions=versions)


def load_spec(path: Path | None = None) -> TorchSpec:
    path = path or data_dir("toolchains") / "torch.toml"
    return parse_spec(read_toml(path), path.name)


@cache
def spec() -> TorchSpec:
    """The project's torch.toml, loaded once."""
    return load_spec()


def torch_version(version: str | None = None) -> TorchVersion:
    return spec().version(version)
