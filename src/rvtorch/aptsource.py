"""The Debian mirror to fetch from: never hard-coded, read from the user or the host's apt setup.

Precedence: an explicit ``--debian-mirror`` value, then ``$RVTORCH_DEBIAN_MIRROR``, then the
host's apt sources (one-line ``.list`` and deb822 ``.sources`` files under the directories that
``apt-config`` names). Users behind their own mirror get it without configuration; a host whose
apt does not point at a Debian archive (Ubuntu, say) gets a usage error naming both options.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

MIRROR_ENV = "RVTORCH_DEBIAN_MIRROR"


@dataclass(frozen=True, kw_only=True)
class AptSource:
    """One ``deb`` line (or deb822 stanza expanded to one URI)."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str = ""
    enabled: bool = True


def parse_one_line(text: str) -> list[AptSource]:
    """Parse the classic ``deb [opts] URI SUITE COMPONENT...`` format (``deb-src`` is skipped)."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        rest = line[4:].strip()
        signed_by = ""
        if rest.startswith("["):
            opts, _, rest = rest[1:].partition("]")
            m = re.search(r"signed-by=(\S+)", opts)
            signed_by = m.group(1) if m else ""
        fields = rest.split()
        if len(fields) < 2:
            continue
        out.append(
            AptSource(
                uri=fields[0],
                suites=(fields[1],),
                components=tuple(fields[2:]),
                signed_by=signed_by,
            )
        )
    return out


def parse_deb822(text: str) -> list[AptSource]:
    """Parse deb822 ``.sources`` stanzas (``Types``, ``URIs``, ``Suites``, ``Enabled``...)."""
    out: list[AptSource] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and key:
                fields[key] += " " + raw.strip()
                continue
            k, sep, v = raw.partition(":")
            if not sep:
                continue
            key = k.strip().lower()
            fields[key] = v.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        enabled = fields.get("enabled", "yes").lower() not in ("no", "false", "0")
        for uri in fields.get("uris", "").split():
            out.append(
                AptSource(
                    uri=uri,
                    suites=tuple(fields.get("suites", "").split()),
                    components=tuple(fields.get("components", "").split()),
                    signed_by=fields.get("signed-by", ""),
                    enabled=enabled,
                )
            )
    return out


def _apt_config(key: str, default: str) -> str:
    if not shutil.which("apt-config"):
        return default
    proc = subprocess.run(
        ["apt-config", "shell", "V", key], capture_output=True, text=True, check=False
    )
    m = re.match(r"V='(.*)'", proc.stdout.strip())
    return m.group(1) if m and m.group(1) else default


def host_apt_sources() -> list[AptSource]:
    """Every ``deb`` source the host's apt is configured with."""
    etc = Path(_apt_config("Dir::Etc/", "/etc/apt/"))
    main = Path(_apt_config("Dir::Etc::sourcelist/f", str(etc / "sources.list")))
    parts = Path(_apt_config("Dir::Etc::sourceparts/d", str(etc / "sources.list.d")))
    sources: list[AptSource] = []
    if main.is_file():
        sources += parse_one_line(main.read_text(errors="replace"))
    if parts.is_dir():
        for f in sorted(parts.iterdir()):
            if f.suffix == ".list":
                sources += parse_one_line(f.read_text(errors="replace"))
            elif f.suffix == ".sources":
                sources += parse_deb822(f.read_text(errors="replace"))
    return sources


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in (Path("/etc/os-release"), Path("/usr/lib/os-release")):
        if path.is_file():
            for line in path.read_text().splitlines():
                k, sep, v = line.partition("=")
                if sep:
                    out[k] = v.strip().strip('"')
            break
    return out


def pick_debian_mirror(sources: list[AptSource], debian_suites: set[str]) -> str | None:
    """The first enabled source that serves one of ``debian_suites`` from the main archive.

    Security and other side archives (``*-security``, ``*-updates``...) are skipped: they do not
    carry full suites. A source signed by Debian's archive keyring also counts.
    """
    for src in sources:
        if not src.enabled or "main" not in src.components:
            continue
        if any(s.endswith("-security") or "/" in s for s in src.suites):
            continue
        base_suites = {s.split("-", 1)[0] for s in src.suites}
        if base_suites & debian_suites or "debian-archive-keyring" in src.signed_by:
            return src.uri.rstrip("/")
    return None


MIRROR_SCHEMES = ("http", "https", "ftp", "file")


def check_mirror_url(value: str, *, what: str = "Debian mirror") -> str:
    """``value`` as a usable archive base URL (no trailing slash), or a usage error (exit 2).

    Checked at parse time (``--debian-mirror``, ``$RVTORCH_DEBIAN_MIRROR``): urllib would
    otherwise fail much later, some inputs (``http://[::1``) with a ValueError traceback.
    """
    from urllib.parse import urlsplit

    hint = "give e.g. http://<host>/debian or file:///srv/debian"
    if any(c.isspace() for c in value) or not value:
        raise UsageError(f"{what} {value!r} is not a URL", hint=hint)
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError for a port that is not a number in range
        host = parts.hostname
    except ValueError as exc:
        raise UsageError(f"{what} {value!r} is not a valid URL: {exc}", hint=hint) from None
    if parts.scheme not in MIRROR_SCHEMES:
        raise UsageError(f"{what} {value!r} is not a URL" if not parts.scheme else
                         f"{what} {value!r}: scheme {parts.scheme!r} is not one of "
                         f"{', '.join(MIRROR_SCHEMES)}", hint=hint)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise UsageError(f"{what} {value!r}: a file URL needs an absolute path", hint=hint)
    elif not host:
        raise UsageError(f"{what} {value!r} has no host name", hint=hint)
    if parts.query or parts.fragment:
        raise UsageError(f"{what} {value!r}: a base URL has no query or fragment", hint=hint)
    del port
    return value.rstrip("/")


def debian_mirror(explicit: str | None = None, *, suite: str | None = None) -> str:
    """The Debian archive URL to use (see the module docstring for the precedence)."""
    for value in (explicit, os.environ.get(MIRROR_ENV)):
        if value:
            return check_mirror_url(value)
    suites = {"stable", "testing", "unstable", "sid", "oldstable"}
    osr = _os_release()
    if osr.get("ID") == "debian" and osr.get("VERSION_CODENAME"):
        suites.add(osr["VERSION_CODENAME"])
    if suite:
        suites.add(suite)
    found = pick_debian_mirror(host_apt_sources(), suites)
    if not found:
        raise UsageError(
            "no Debian mirror found in the host's apt sources",
            hint=f"pass --debian-mirror URL or set {MIRROR_ENV}",
        )
    return found
