"""Cross-build of the C++ FL core in the toolchain image (no QEMU): the binary is a target ELF
that links Debian's libtorch 2.6. The emulated tier reuses this build (cached by source hash)."""

from __future__ import annotations

import pytest
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from rvtorch import fastflow_fl
from rvtorch.targets import target

pytestmark = pytest.mark.integration


def test_core_cross_builds_for_riscv64() -> None:
    bins = fastflow_fl.build_programs("riscv64", fastflow=False)
    assert set(bins) == {fastflow_fl.CORE_TEST}
    with bins[fastflow_fl.CORE_TEST].open("rb") as fh:
        elf = ELFFile(fh)
        assert elf.header["e_machine"] == target("riscv64").elf_machine
        needed = {tag.needed for sec in elf.iter_sections() if isinstance(sec, DynamicSection)
                  for tag in sec.iter_tags() if tag.entry.d_tag == "DT_NEEDED"}
    assert {"libtorch.so.2.6", "libc10.so.2.6"} <= needed, needed
    # a rerun reuses the cached build
    assert fastflow_fl.build_programs("riscv64", fastflow=False) == bins
