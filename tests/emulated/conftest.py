"""Emulated tier: the shared target root filesystems, created once per cache and in parallel.

Every emulated test that needs a rootfs gets it through ``rvtorch.rootfs.ensure_rootfs`` (cached by
recipe hash, never rebuilt). This session fixture creates the set the tier uses up front, two
emulated arches side by side, so a cold CI machine spends its two cores on it at once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rvtorch.emulate import HOST_ARCH
from rvtorch.rootfs import ensure_many
from rvtorch.targets import matrix


def rootfs_specs() -> list[tuple[str, bool]]:
    """Base and torch rootfs of every target, and the host reference with torch."""
    return [(t.arch, True) for t in matrix().targets] + [(HOST_ARCH, True)]


@pytest.fixture(scope="session", autouse=True)
def shared_rootfs() -> dict[tuple[str, bool], Path]:
    # RVTORCH_ROOTFS_PREWARM=0: make each rootfs only when a test asks for it (local runs of a
    # few tests).
    if os.geteuid() != 0 or os.environ.get("RVTORCH_ROOTFS_PREWARM") == "0":
        return {}
    # The torch rootfs are built on top of the base ones, so this also makes the bases.
    made = ensure_many(rootfs_specs(), jobs=3)
    for arch, _ in rootfs_specs():
        made[(arch, False)] = ensure_many([(arch, False)])[(arch, False)]
    return made
