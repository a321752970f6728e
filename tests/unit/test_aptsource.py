"""Unit tests of rvtorch.aptsource: the Debian mirror comes from the user or the host's apt."""

from __future__ import annotations

import pytest

from rvtorch import aptsource
from rvtorch.aptsource import (
    AptSource,
    debian_mirror,
    parse_deb822,
    parse_one_line,
    pick_debian_mirror,
)
from rvtorch.errors import UsageError

DEB822 = """Types: deb
# a comment
URIs: http://mirror.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example.org/debian
Suites: bookworm
Components: main
"""

ONE_LINE = """# deb http://commented.example.org/debian bookworm main
deb-src http://src.example.org/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/node.gpg] https://node.example.org/x nodistro main
deb http://local.example.org/debian/ trixie main contrib
"""


def test_parse_deb822_skips_deb_src() -> None:
    srcs = parse_deb822(DEB822)
    assert [s.uri for s in srcs] == [
        "http://mirror.example.org/debian", "http://mirror.example.org/debian-security"]
    assert srcs[0].suites == ("bookworm", "bookworm-updates")


def test_parse_one_line() -> None:
    srcs = parse_one_line(ONE_LINE)
    assert [s.uri for s in srcs] == ["https://node.example.org/x",
                                     "http://local.example.org/debian/"]
    assert srcs[0].signed_by.endswith("node.gpg")


def test_pick_skips_security_and_foreign_archives() -> None:
    srcs = parse_one_line(ONE_LINE) + parse_deb822(DEB822)
    assert pick_debian_mirror(srcs, {"bookworm"}) == "http://mirror.example.org/debian"
    assert pick_debian_mirror(srcs, {"trixie"}) == "http://local.example.org/debian"
    disabled = [AptSource(uri="http://x/debian", suites=("trixie",), components=("main",),
                          enabled=False)]
    assert pick_debian_mirror(disabled, {"trixie"}) is None


def test_precedence_explicit_env_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aptsource, "host_apt_sources", lambda: parse_deb822(DEB822))
    monkeypatch.setattr(aptsource, "_os_release",
                        lambda: {"ID": "debian", "VERSION_CODENAME": "bookworm"})
    monkeypatch.delenv("RVTORCH_DEBIAN_MIRROR", raising=False)
    assert debian_mirror() == "http://mirror.example.org/debian"
    monkeypatch.setenv("RVTORCH_DEBIAN_MIRROR", "http://env.example.org/debian/")
    assert debian_mirror() == "http://env.example.org/debian"
    assert debian_mirror("file:///srv/debian") == "file:///srv/debian"
    with pytest.raises(UsageError, match="not a URL"):
        debian_mirror("mirror.example.org")


def test_no_debian_source_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    ubuntu = "deb http://archive.ubuntu.com/ubuntu noble main universe\n"
    monkeypatch.setattr(aptsource, "host_apt_sources", lambda: parse_one_line(ubuntu))
    monkeypatch.setattr(aptsource, "_os_release",
                        lambda: {"ID": "ubuntu", "VERSION_CODENAME": "noble"})
    monkeypatch.delenv("RVTORCH_DEBIAN_MIRROR", raising=False)
    with pytest.raises(UsageError) as exc:
        debian_mirror(suite="trixie")
    assert "--debian-mirror" in exc.value.one_line()
    assert "RVTORCH_DEBIAN_MIRROR" in exc.value.one_line()
