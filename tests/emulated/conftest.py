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
from tests.conftest import SLOW_ROOTFS_ARCHES


def rootfs_specs() -> list[tuple[str, bool]]:
    """Base and torch rootfs of every target, and the host reference with torch.

    Targets whose rootfs is too slow to make in the CI budget (tests/conftest.py
    SLOW_ROOTFS_ARCHES) are left to the tests that need them, which run with RVTORCH_TEST_SLOW=1.
    """
    slow_ok = os.environ.get("RVTORCH_TEST_SLOW") == "1"
    arches = [t.arch for t in matrix().targets if slow_ok or t.arch not in SLOW_ROOTFS_ARCHES]
    return [(a, True) for a in arches] + [(HOST_ARCH, True)]


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
