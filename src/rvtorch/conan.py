"""Conan 2, offline: a project-local Conan home whose only remote is the repo's ``recipes/``.

* ``CONAN_HOME`` is ``cache_dir()/conan/home`` (never the user's ``~/.conan2``); its
  ``remotes.json`` is rewritten on every use so ``conancenter`` never comes back, and the one
  remote, ``rvtorch``, is ``recipes/`` as a local-recipes-index.
* Sources keep their upstream URL and sha256 in each recipe's ``conandata.yml``. Conan looks in
  ``core.sources:download_cache`` under ``s/<sha256>`` before any download, so this module fills
  that cache: Debian orig tarballs from the Debian mirror (``rvtorch.aptsource``), anything else
  from a source mirror directory (``--source-mirror DIR`` or ``$RVTORCH_SOURCE_MIRROR``; files
  named as in their URL, or by their sha256). Every file is sha256-verified before it is put in
  place (temp file + rename), and a cache entry is verified again before Conan is handed it
  (Conan copies a download-cache entry unchecked): a bad one is deleted.
  Conan's own ``core.sources:download_urls`` backup servers are HTTP only (``requests`` has no
  ``file://`` adapter), so a mirror directory is imported into the cache instead. The recipes
  themselves just call Conan's ``get()``: the upstream URL stays the source of truth.
* A source that is neither cached nor fetchable is a :class:`SourceError` (exit 3) in one line:
  which file, which sha256, how to provide it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import proc
from .errors import SourceError, UsageError
from .paths import cache_dir, data_dir

REMOTE_NAME = "rvtorch"
# Conan settings the project relies on, written to global.conf on every setup.
GLOBAL_CONF = {
    "core:non_interactive": "True",
    # A missing source should fail fast with our one-line message, not retry an unreachable host.
    "tools.files.download:retry": "0",
    "tools.files.download:retry_wait": "0",
    "core.net.http:timeout": "20",
}
DEBIAN_POOL = "/debian/pool/"
# A directory of pinned source archives (named as in their URL, or by sha256) that stands in for
# the network: CI points it at its offline mirror; users with network access need nothing.
SOURCE_MIRROR_ENV = "RVTORCH_SOURCE_MIRROR"


@dataclass(frozen=True, kw_only=True)
class RecipeSource:
    """One pinned source of one recipe version (a ``conandata.yml`` entry)."""

    recipe: str
    version: str
    url: str
    sha256: str
    size: int | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def is_debian(self) -> bool:
        return DEBIAN_POOL in self.url

    @property
    def ref(self) -> str:
        return f"{self.recipe}/{self.version}"


def recipes_dir() -> Path:
    return data_dir("recipes")


def recipe_names() -> list[str]:
    root = recipes_dir()
    return sorted(p.name for p in root.iterdir() if (p / "config.yml").is_file())


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise UsageError(f"{path} not found") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from exc


def recipe_versions(name: str) -> list[str]:
    """Versions ``recipes/<name>/config.yml`` serves, as written there."""
    path = recipes_dir() / name / "config.yml"
    if not path.is_file():
        from .targets import suggest

        raise UsageError(f"no recipe {name!r} in {recipes_dir()}",
                         hint=suggest(name, recipe_names()))
    data = _load_yaml(path) or {}
    return [str(v) for v in (data.get("versions") or {})]


def recipe_sources(name: str) -> list[RecipeSource]:
    """Every pinned source of ``name`` (all versions); a source without sha256 is an error."""
    out: list[RecipeSource] = []
    for folder in sorted({_version_folder(name, v) for v in recipe_versions(name)}):
        path = recipes_dir() / name / folder / "conandata.yml"
        data = _load_yaml(path) or {}
        for version, entry in (data.get("sources") or {}).items():
            entries = entry if isinstance(entry, list) else [entry]
            for e in entries:
                url = e.get("url")
                url = url[0] if isinstance(url, list) else url
                if not url or not e.get("sha256"):
                    raise UsageError(f"{path}: source of {name}/{version} needs url and sha256")
                out.append(RecipeSource(recipe=name, version=str(version), url=str(url),
                                        sha256=str(e["sha256"]), size=e.get("size")))
    return out


def _version_folder(name: str, version: str) -> str:
    data = _load_yaml(recipes_dir() / name / "config.yml") or {}
    return str((data.get("versions") or {}).get(version, {}).get("folder", "all"))


def source_of(name: str, version: str) -> RecipeSource:
    for src in recipe_sources(name):
        if src.version == version:
            return src
    from .targets import suggest

    raise UsageError(f"{name} has no version {version!r}",
                     hint=suggest(version, recipe_versions(name)))


# ----------------------------------------------------------------------------- the Conan home
def conan_root() -> Path:
    return cache_dir() / "conan"


def conan_home() -> Path:
    return conan_root() / "home"


def download_cache() -> Path:
    """``core.sources:download_cache``: Conan finds a source here as ``s/<sha256>``."""
    return conan_root() / "sources"


def cached_source(src: RecipeSource) -> Path:
    return download_cache() / "s" / src.sha256


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def setup_home(home: Path | None = None, *, recipes: Path | None = None,
               sources: Path | None = None) -> Path:
    """Write the project's Conan home (idempotent) and return it."""
    home = home or conan_home()
    recipes = (recipes or recipes_dir()).resolve()
    sources = (sources or download_cache()).resolve()
    (sources / "s").mkdir(parents=True, exist_ok=True)
    conf = dict(GLOBAL_CONF)
    conf["core.sources:download_cache"] = str(sources)
    _atomic_write(home / "global.conf", "".join(f"{k}={v}\n" for k, v in conf.items()))
    # A local-recipes-index remote names the folder that *contains* recipes/.
    remotes = {"remotes": [{"name": REMOTE_NAME, "url": str(recipes.parent), "verify_ssl": True,
                            "remote_type": "local-recipes-index"}]}
    _atomic_write(home / "remotes.json", json.dumps(remotes, indent=2) + "\n")
    return home


def conan_env(home: Path | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for running ``conan`` against the project home (and nothing of the user's)."""
    env = dict(os.environ if base is None else base)
    env["CONAN_HOME"] = str(home or conan_home())
    for var in ("CONAN_DEFAULT_PROFILE", "CONAN_LOGIN_USERNAME", "CONAN_PASSWORD"):
        env.pop(var, None)
    return env


def conan_exe() -> str:
    """The ``conan`` next to this Python (the project venv), else the one on PATH."""
    here = Path(sys.executable).parent / "conan"
    if here.is_file():
        return str(here)
    return proc.which("conan", hint="pip install 'conan>=2.10' (a runtime dependency of rvtorch)")


def run_conan(args: Sequence[str], *, home: Path | None = None, capture: bool = False,
              check: bool = True, quiet: bool = False, what: str | None = None) -> Any:
    home = setup_home(home)
    return proc.run([conan_exe(), *args], env=conan_env(home), capture=capture, check=check,
                    quiet=quiet, what=what or f"conan {args[0] if args else ''}".strip())


# ----------------------------------------------------------------------- filling the cache
def missing_source_message(src: RecipeSource) -> str:
    return (f"{src.ref}: source {src.filename} (sha256 {src.sha256}) is not available offline; "
            f"put it in a directory given as --source-mirror DIR or ${SOURCE_MIRROR_ENV}=DIR, "
            f"or at {cached_source(src)}")


def env_source_mirror() -> Path | None:
    """``$RVTORCH_SOURCE_MIRROR`` as a directory (``None`` when unset or empty)."""
    value = os.environ.get(SOURCE_MIRROR_ENV, "").strip()
    return Path(value) if value else None


# Cache entries already hashed in this process: (path, size, mtime_ns) -> ok.
_verified: dict[tuple[str, int, int], bool] = {}


def have_source(src: RecipeSource) -> bool:
    """Whether the download cache holds ``src`` with its pinned sha256.

    A cache entry whose bytes do not match is deleted (Conan would hand it to the recipe
    unchecked), so the caller fetches or imports it again.
    """
    from .sources import sha256_file

    path = cached_source(src)
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        _verified[key] = sha256_file(path) == src.sha256
    if not _verified[key]:
        path.unlink(missing_ok=True)
        return False
    return True


def _verify_into_cache(candidate: Path, src: RecipeSource, *, move: bool) -> Path:
    """Copy (or move) ``candidate`` into the cache iff its sha256 matches (atomic)."""
    from .sources import sha256_file

    dest = cached_source(src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{src.sha256[:12]}.")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if move:
            shutil.move(str(candidate), tmp)
        else:
            shutil.copyfile(candidate, tmp)
        digest = sha256_file(tmp)
        if digest != src.sha256:
            raise SourceError(
                f"{src.ref}: {candidate.name} has sha256 {digest}, pinned {src.sha256}; not used",
                hint="provide the exact file the recipe pins",
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def import_mirror(mirror: Path, wanted: Iterable[RecipeSource]) -> list[RecipeSource]:
    """Put files of ``mirror`` (named as in their URL, or by sha256) into the download cache."""
    if not mirror.is_dir():
        raise UsageError(f"source mirror {mirror} is not a directory",
                         hint=f"--source-mirror / ${SOURCE_MIRROR_ENV}")
    imported = []
    for src in wanted:
        if have_source(src):
            continue
        for name in (src.filename, src.sha256):
            candidate = mirror / name
            if candidate.is_file():
                _verify_into_cache(candidate, src, move=False)
                imported.append(src)
                break
    return imported


def debian_url(src: RecipeSource, mirror: str) -> str:
    """The Debian pool URL of ``src`` on ``mirror`` (the recipe's URL names the canonical host)."""
    return mirror.rstrip("/") + "/pool/" + src.url.split(DEBIAN_POOL, 1)[1]


def fetch_debian_source(src: RecipeSource, mirror: str | None = None) -> Path:
    """Download a Debian orig tarball from the configured Debian mirror into the cache."""
    from .aptsource import debian_mirror
    from .sources import download
    from .torchspec import PinnedFile

    if have_source(src):
        return cached_source(src)
    if not src.is_debian:
        raise SourceError(missing_source_message(src))
    if src.size is None:
        raise UsageError(f"{src.ref}: conandata.yml entry of a Debian source needs its size")
    url = debian_url(src, debian_mirror(mirror))
    with tempfile.TemporaryDirectory(dir=download_cache(), prefix=".fetch-") as tmp:
        got = download(url, Path(tmp) / src.filename,
                       PinnedFile(name=src.filename, sha256=src.sha256, size=int(src.size)))
        return _verify_into_cache(got, src, move=True)


def reachable(url: str, timeout: float = 8) -> bool:
    """Whether ``url`` answers a HEAD request (GitHub, say, is not reachable everywhere)."""
    import urllib.error
    import urllib.request

    try:
        req = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bool(resp.status < 400)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def ensure_sources(srcs: Iterable[RecipeSource], *, mirror: str | None = None,
                   source_mirror: Path | None = None, probe: bool = True) -> None:
    """Make every source available to Conan, or fail (exit 3) naming the first that is not.

    Debian sources are fetched into the cache; others come from ``source_mirror`` (default
    ``$RVTORCH_SOURCE_MIRROR``) or stay with Conan's own download when their upstream URL
    answers (``probe``).
    """
    srcs = list(srcs)
    download_cache().joinpath("s").mkdir(parents=True, exist_ok=True)
    source_mirror = source_mirror if source_mirror is not None else env_source_mirror()
    if source_mirror is not None:
        import_mirror(source_mirror, srcs)
    for src in srcs:
        if not have_source(src) and src.is_debian:
            fetch_debian_source(src, mirror)
        if not have_source(src) and not (probe and reachable(src.url)):
            raise SourceError(missing_source_message(src))
