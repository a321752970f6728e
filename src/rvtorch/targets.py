"""Load and validate ``toolchains/targets.toml`` into frozen dataclasses.

This is the only place that knows the target matrix. An unknown key, a missing key, a value of
the wrong type, an unknown arch or an unknown CPU model raises :class:`UsageError` with a
"did you mean" hint (exit code 2).
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from .errors import UsageError
from .paths import data_dir

T = TypeVar("T")


def suggest(value: str, choices: list[str] | tuple[str, ...]) -> str:
    """A ``did you mean`` hint (or the list of valid values)."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "valid: " + ", ".join(sorted(choices))


@dataclass(frozen=True, kw_only=True)
class CpuModel:
    """One QEMU CPU model a target is validated on."""

    name: str
    qemu_cpu: str
    vector: bool
    openblas_core: str
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class Target:
    """One row of the target matrix."""

    arch: str
    description: str
    triple: str
    march: str
    mabi: str
    debian_arch: str
    conan_arch: str
    cmake_system_processor: str
    elf_machine: str
    qemu_binary: str
    # QEMU -cpu for emulated work that is not a validation on a CPU model (rootfs creation).
    emulation_cpu: str
    wheel_platform: str
    openblas_targets: tuple[str, ...]
    cpu: tuple[CpuModel, ...]

    @property
    def cpu_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cpu)

    def cpu_model(self, name: str) -> CpuModel:
        """Look a CPU model up by its short name or its exact QEMU ``-cpu`` string."""
        for model in self.cpu:
            if name in (model.name, model.qemu_cpu):
                return model
        raise UsageError(
            f"unknown CPU model {name!r} for {self.arch}",
            hint=suggest(name, self.cpu_names),
        )

    @property
    def vector_models(self) -> tuple[CpuModel, ...]:
        return tuple(c for c in self.cpu if c.vector)

    @property
    def scalar_models(self) -> tuple[CpuModel, ...]:
        return tuple(c for c in self.cpu if not c.vector)

    @property
    def cflags(self) -> str:
        if self.arch == "aarch64":
            # GCC on aarch64 has no -mabi=lp64 alias issues, but -march is the only knob needed.
            return f"-march={self.march}"
        return f"-march={self.march} -mabi={self.mabi}"

    @property
    def multiarch_libdir(self) -> str:
        return f"/usr/lib/{self.triple}"


@dataclass(frozen=True, kw_only=True)
class Project:
    suite: str
    gcc: str
    python: str
    image: str
    base_image: str
    base_image_pull: str

    @property
    def python_tag(self) -> str:
        return "cp" + self.python.replace(".", "")


@dataclass(frozen=True, kw_only=True)
class Matrix:
    project: Project
    targets: tuple[Target, ...]

    @property
    def arches(self) -> tuple[str, ...]:
        return tuple(t.arch for t in self.targets)

    def target(self, arch: str) -> Target:
        for t in self.targets:
            if t.arch == arch:
                return t
        raise UsageError(f"unknown arch {arch!r}", hint=suggest(arch, self.arches))

    def to_json(self) -> dict[str, Any]:
        return {
            "project": dataclasses.asdict(self.project),
            "targets": {t.arch: _target_json(t) for t in self.targets},
        }


def _target_json(t: Target) -> dict[str, Any]:
    d = dataclasses.asdict(t)
    d["openblas_targets"] = list(t.openblas_targets)
    d["cpu"] = [dataclasses.asdict(c) for c in t.cpu]
    return d


def _build(cls: type[T], table: dict[str, Any], where: str, **extra: Any) -> T:
    """Build a frozen dataclass from a TOML table, rejecting unknown or missing keys."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    allowed = [n for n in fields if n not in extra]
    for key in table:
        if key not in allowed:
            raise UsageError(f"{where}: unknown key {key!r}", hint=suggest(key, allowed))
    values: dict[str, Any] = dict(extra)
    for name in allowed:
        f = fields[name]
        if name not in table:
            if f.default is dataclasses.MISSING:
                raise UsageError(f"{where}: missing key {name!r}")
            continue
        values[name] = _check_type(table[name], hints[name], f"{where}.{name}")
    return cls(**values)


def _check_type(value: Any, hint: Any, where: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str) or not value:
            raise UsageError(f"{where}: expected a non-empty string, got {value!r}")
        return value
    if hint == tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    raise UsageError(f"{where}: unsupported field type {hint!r}")  # pragma: no cover


def parse_matrix(data: dict[str, Any], where: str = "targets.toml") -> Matrix:
    top_allowed = ["project", "target"]
    for key in data:
        if key not in top_allowed:
            raise UsageError(f"{where}: unknown table {key!r}", hint=suggest(key, top_allowed))
    if "project" not in data or "target" not in data:
        raise UsageError(f"{where}: needs [project] and [target.*] tables")
    project = _build(Project, data["project"], f"{where}[project]")
    targets: list[Target] = []
    for arch, table in data["target"].items():
        w = f"{where}[target.{arch}]"
        table = dict(table)
        cpu_tables = table.pop("cpu", None)
        if not cpu_tables:
            raise UsageError(f"{w}: needs at least one [[target.{arch}.cpu]] model")
        cpus = tuple(
            _build(CpuModel, c, f"{w}.cpu[{i}]") for i, c in enumerate(cpu_tables)
        )
        names = [c.name for c in cpus]
        if len(set(names)) != len(names):
            raise UsageError(f"{w}: duplicate CPU model names {names}")
        if not any(not c.vector for c in cpus):
            raise UsageError(f"{w}: needs a CPU model without the vector extension")
        targets.append(_build(Target, table, w, arch=arch, cpu=cpus))
    return Matrix(project=project, targets=tuple(targets))


def read_toml(path: Path) -> dict[str, Any]:
    """Read one of the project's TOML data files; a missing or invalid file is a usage error."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise UsageError(f"{path} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from exc


def load_matrix(path: Path | None = None) -> Matrix:
    path = path or data_dir("toolchains") / "targets.toml"
    return parse_matrix(read_toml(path), path.name)


@cache
def matrix() -> Matrix:
    """The project's matrix, loaded once."""
    return load_matrix()


def target(arch: str) -> Target:
    return matrix().target(arch)
