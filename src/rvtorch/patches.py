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

TYPES = ("cross", "system-libs", "fix")
MANIFEST = "series.toml"
_KEYS = ("file", "type", "why", "upstream", "providers")


@dataclass(frozen=True, kw_only=True)
class Patch:
    file: str
    type: str
    why: str
    upstream: str
    providers: tuple[str, ...]
    path: Path

    def applies_to(self, provider: str) -> bool:
        return provider in self.providers


@dataclass(frozen=True, kw_only=True)
class Series:
    directory: Path
    patches: tuple[Patch, ...]

    def for_provider(self, provider: str) -> tuple[Patch, ...]:
        return tuple(p for p in self.patches if p.applies_to(provider))

    def digest(self, provider: str) -> str:
        """sha256 over the patches that apply to ``provider`` (names + contents), in order."""
        h = hashlib.sha256()
        for p in self.for_provider(provider):
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
        if key != "patch":
            raise UsageError(f"{manifest}: unknown table {key!r}", hint=suggest(key, ["patch"]))
    patches: list[Patch] = []
    for i, entry in enumerate(data.get("patch", [])):
        where = f"{manifest.name}: patch[{i}]"
        for key in entry:
            if key not in _KEYS:
                raise UsageError(f"{where}: unknown key {key!r}", hint=suggest(key, _KEYS))
        for key in _KEYS:
            if key not in entry:
                raise UsageError(f"{where}: missing key {key!r}")
        if entry["type"] not in TYPES:
            raise UsageError(
                f"{where}: unknown type {entry['type']!r}", hint=suggest(entry["type"], TYPES)
            )
        providers = tuple(entry["providers"])
        for pr in providers:
            if pr not in PROVIDERS:
                raise UsageError(f"{where}: unknown provider {pr!r}", hint=suggest(pr, PROVIDERS))
        path = directory / entry["file"]
        if not path.is_file():
            raise UsageError(f"{where}: {entry['file']} does not exist in {directory}")
        patches.append(
            Patch(
                file=entry["file"],
                type=entry["type"],
                why=entry["why"],
                upstream=entry["upstream"],
                providers=providers,
                path=path,
            )
        )
    names = [p.file for p in patches]
    if len(set(names)) != len(names):
        raise UsageError(f"{manifest}: a patch is listed twice")
    unlisted = sorted({f.name for f in directory.glob("*.patch")} - set(names))
    if unlisted:
        raise UsageError(
            f"{manifest}: {unlisted[0]} is not listed",
            hint="add a [[patch]] entry or delete the file",
        )
    if names != sorted(names):
        raise UsageError(f"{manifest}: patches must be listed in file-name order")
    return Series(directory=directory, patches=tuple(patches))


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

