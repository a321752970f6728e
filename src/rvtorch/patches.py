"""The patch series of a torch version: manifest (series.toml) and atomic application.

Application is all or nothing: the series is applied to a staging copy of the tree, in order, with
``git apply``; only when every patch applied does the copy replace the tree. A failure raises
:class:`SourceError` (exit 3) naming the patch file and the hunk that did not apply, and leaves the
tree untouched.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import SourceError, UsageError
from .proc import which
from .targets import suggest
from .torchspec import PROVIDERS, TorchVersion

TYPES = ("cross", "system-libs", "fix", "feature")
MANIFEST = "series.toml"
_KEYS = ("file", "type", "why", "upstream", "providers")
# An optional patch also names its feature; its file lives in the feature's folder
# (``<feature>/NNNN-*.patch``), so the default series stays exactly the top-level patches.
_OPTIONAL_KEYS = (*_KEYS, "feature")
_FEATURE = re.compile(r"[a-z][a-z0-9-]*")


@dataclass(frozen=True, kw_only=True)
class Patch:
    file: str
    type: str
    why: str
    upstream: str
    providers: tuple[str, ...]
    path: Path
    feature: str | None = None  # None: the default series; else the optional group

    def applies_to(self, provider: str) -> bool:
        return provider in self.providers


@dataclass(frozen=True, kw_only=True)
class Series:
    """The default series (``patches``, applied to every build) and the optional groups
    (``optional``, ``[[optional]]`` in the manifest), applied after it only for the features a
    build asks for. Nothing of the optional groups reaches a build, a tree digest or
    ``for_provider`` unless its feature is named."""

    directory: Path
    patches: tuple[Patch, ...]
    optional: tuple[Patch, ...] = ()

    def features(self) -> tuple[str, ...]:
        return tuple(sorted({p.feature for p in self.optional if p.feature}))

    def for_provider(self, provider: str, features: Sequence[str] = ()) -> tuple[Patch, ...]:
        """The default series for ``provider``, then the optional patches of ``features`` (in
        manifest order); an unknown feature is a usage error."""
        for f in features:
            if f not in self.features():
                raise UsageError(
                    f"{self.directory.name}: no optional patch group {f!r}",
                    hint=suggest(f, self.features()),
                )
        default = tuple(p for p in self.patches if p.applies_to(provider))
        extra = tuple(
            p for p in self.optional if p.feature in features and p.applies_to(provider)
        )
        return default + extra

    def digest(self, provider: str, features: Sequence[str] = ()) -> str:
        """sha256 over the patches that apply to ``provider`` (names + contents), in order."""
        h = hashlib.sha256()
        for p in self.for_provider(provider, features):
            h.update(p.file.encode() + b"\0" + p.path.read_bytes() + b"\0")
        return h.hexdigest()


def load_series(directory: Path) -> Series:
    """Read ``series.toml`` and check it against the directory: every listed file exists and
    every ``*.patch`` file is listed (exit 2 otherwise)."""
    manifest = directory / MANIFEST
    try:
        with manifest.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise UsageError(f"patch manifest {manifest} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{manifest}: invalid TOML: {exc}") from exc
    for key in data:
        if key not in ("patch", "optional"):
            raise UsageError(
                f"{manifest}: unknown table {key!r}", hint=suggest(key, ["patch", "optional"])
            )
    patches = [_entry(directory, f"patch[{i}]", e, optional=False)
               for i, e in enumerate(data.get("patch", []))]
    optional = [_entry(directory, f"optional[{i}]", e, optional=True)
                for i, e in enumerate(data.get("optional", []))]
    names = [p.file for p in patches]
    extra = [p.file for p in optional]
    if len(set(names + extra)) != len(names) + len(extra):
        raise UsageError(f"{manifest}: a patch is listed twice")
    unlisted = sorted({f.name for f in directory.glob("*.patch")} - set(names))
    unlisted += sorted(
        {f"{f.parent.name}/{f.name}" for f in directory.glob("*/*.patch")} - set(extra)
    )
    if unlisted:
        raise UsageError(
            f"{manifest}: {unlisted[0]} is not listed",
            hint="add a [[patch]] (or [[optional]] for a feature folder) entry or delete the file",
        )
    if names != sorted(names):
        raise UsageError(f"{manifest}: patches must be listed in file-name order")
    for feature in {p.feature for p in optional}:
        group = [p.file for p in optional if p.feature == feature]
        if group != sorted(group):
            raise UsageError(f"{manifest}: optional patches of {feature!r} must be listed in "
                             "file-name order")
    return Series(directory=directory, patches=tuple(patches), optional=tuple(optional))


def _entry(directory: Path, index: str, entry: dict[str, object], *, optional: bool) -> Patch:
    """One checked manifest entry (exit 2 on anything wrong)."""
    where = f"{MANIFEST}: {index}"
    keys = _OPTIONAL_KEYS if optional else _KEYS
    for key in entry:
        if key not in keys:
            raise UsageError(f"{where}: unknown key {key!r}", hint=suggest(key, keys))
    for key in keys:
        if key not in entry:
            raise UsageError(f"{where}: missing key {key!r}")
    ptype = str(entry["type"])
    if ptype not in TYPES:
        raise UsageError(f"{where}: unknown type {ptype!r}", hint=suggest(ptype, TYPES))
    raw_providers = entry["providers"]
    if not isinstance(raw_providers, list):
        raise UsageError(f"{where}: providers must be a list")
    providers = tuple(str(pr) for pr in raw_providers)
    for pr in providers:
        if pr not in PROVIDERS:
            raise UsageError(f"{where}: unknown provider {pr!r}", hint=suggest(pr, PROVIDERS))
    file = str(entry["file"])
    feature: str | None = None
    if optional:
        feature = str(entry["feature"])
        if not _FEATURE.fullmatch(feature):
            raise UsageError(f"{where}: feature {feature!r} is not a lower-case name")
        if Path(file).parent.as_posix() != feature:
            raise UsageError(f"{where}: {file} must be in the feature's folder {feature}/")
    elif "/" in file:
        raise UsageError(f"{where}: {file}: a default patch is a top-level file",
                         hint="patches in a folder belong to an [[optional]] group")
    path = directory / file
    if not path.is_file():
        raise UsageError(f"{where}: {file} does not exist in {directory}")
    return Patch(file=file, type=ptype, why=str(entry["why"]), upstream=str(entry["upstream"]),
                 providers=providers, path=path, feature=feature)


def series_for(tv: TorchVersion) -> Series:
    return load_series(tv.patch_dir)


# ------------------------------------------------------------------------------------ failures
_FAILED = re.compile(r"patch failed: (?P<file>.+?):(?P<line>\d+)")
_MISSING = re.compile(
    r"error: (?P<file>.+?): (?:No such file or directory|does not exist in index)"
)


def _hunks(patch_text: str, target: str) -> list[tuple[int, str]]:
    """(old start line, header) of every hunk that patches ``target``."""
    hunks: list[tuple[int, str]] = []
    current = None
    for line in patch_text.splitlines():
        if line.startswith("+++ "):
            name = line[4:].strip()
            current = name[2:] if name.startswith(("a/", "b/")) else name
        elif line.startswith("@@ ") and current == target:
            m = re.match(r"@@ -(\d+)", line)
            if m:
                hunks.append((int(m.group(1)), line.split("@@")[1].strip()))
    return hunks


def describe_failure(patch: Patch, stderr: str) -> str:
    """One line naming the patch, the file and the hunk (number and header) that failed."""
    m = _FAILED.search(stderr)
    if m:
        target, line = m.group("file"), int(m.group("line"))
        hunks = _hunks(patch.path.read_text(errors="replace"), target)
        for n, (start, header) in enumerate(hunks, 1):
            if start == line:
                return f"{patch.file}: hunk #{n} ({header}) of {target} does not apply"
        return f"{patch.file}: {target}:{line} does not apply"
    m = _MISSING.search(stderr)
    if m:
        return f"{patch.file}: {m.group('file')} is missing from the tree"
    last = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return f"{patch.file}: " + (last[-1] if last else "git apply failed")


# ---------------------------------------------------------------------------------- application
def _git_apply(patch: Patch, tree: Path, *, check: bool) -> subprocess.CompletedProcess[str]:
    git = which("git", hint="install git")
    argv = [git, "apply", "--whitespace=nowarn", "-p1"]
    if check:
        argv.append("--check")
    # --unsafe-paths is not needed: every path is relative to the tree. GIT_DIR points nowhere so a
    # tree inside another repository is still patched as plain files.
    return subprocess.run(
        [*argv, str(patch.path)],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
        env={"GIT_DIR": str(tree / ".rvtorch-no-git"), "PATH": "/usr/bin:/bin"},
    )


def apply_in_place(patches: Sequence[Patch], tree: Path) -> None:
    """Apply ``patches`` in order to ``tree``, which must be a disposable staging copy."""
    for patch in patches:
        res = _git_apply(patch, tree, check=True)
        if res.returncode == 0:
            res = _git_apply(patch, tree, check=False)
        if res.returncode != 0:
            raise SourceError(
                describe_failure(patch, res.stderr),
                hint="the tree was left untouched; refresh the patch for this source",
            )


def _copy_tree(src: Path, dest: Path) -> None:
    """A full copy (cp -a: several times faster than shutil on a 30k-file tree; reflinks where
    the file system has them)."""
    cp = shutil.which("cp")
    if cp:
        res = subprocess.run([cp, "-a", "--reflink=auto", str(src), str(dest)],
                             capture_output=True, text=True, check=False)
        if res.returncode == 0:
            return
        shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, symlinks=True)


def apply_series(patches: Sequence[Patch], tree: Path) -> None:
    """Apply ``patches`` to ``tree`` atomically: a staging copy is patched and swapped in only when
    every patch applied; on failure ``tree`` is exactly as before."""
    if not tree.is_dir():
        raise UsageError(f"source tree {tree} does not exist")
    staging = tree.with_name(f".{tree.name}.patching")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        _copy_tree(tree, staging)
        apply_in_place(patches, staging)
        old = tree.with_name(f".{tree.name}.old")
        if old.exists():
            shutil.rmtree(old)
        tree.rename(old)
        staging.rename(tree)
        shutil.rmtree(old)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

