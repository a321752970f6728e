"""Builds the FastFlow checks and runs them: natively, or under QEMU when cross-building
(``tools.build.cross_building:can_run=True`` plus ``user.rvtorch:emulator``).

``user.rvtorch:cpu_models`` = ``{"name": {"qemu_cpu": ...}, ...}`` runs the program once per QEMU
CPU model (rv64 and the RVV models on riscv64, say), each of which must print its OK line.
"""

import os
import shlex
from io import StringIO

from conan import ConanFile
from conan.errors import ConanException
from conan.tools.build import can_run, cross_building
from conan.tools.cmake import CMake, cmake_layout

EMULATOR_CONF = "user.rvtorch:emulator"
OK_LINE = "fastflow test_package: OK"


class TestPackageConan(ConanFile):
    settings = "os", "arch", "compiler", "build_type"
    generators = "CMakeDeps", "CMakeToolchain", "VirtualRunEnv"
    test_type = "explicit"

    def requirements(self):
        self.requires(self.tested_reference_str)

    def layout(self):
        cmake_layout(self)

    def build(self):
        cmake = CMake(self)
        cmake.configure()
        cmake.build()

    def _prefix(self, qemu_cpu):
        if not cross_building(self):
            return []
        emulator = self.conf.get(EMULATOR_CONF, default=None)
        if not emulator:
            raise ConanException(
                f"fastflow test_package: cross run needs -c {EMULATOR_CONF}=qemu-<arch>-static"
            )
        prefix = shlex.split(emulator)
        if qemu_cpu:
            # The profile's emulator names a baseline -cpu; this run names its own.
            if "-cpu" in prefix:
                at = prefix.index("-cpu")
                del prefix[at:at + 2]
            prefix += ["-cpu", qemu_cpu]
        return prefix

    def test(self):
        if not can_run(self):
            self.output.warning("fastflow test_package: not run (cross build, no emulator)")
            return
        binary = os.path.join(self.cpp.build.bindir, "test_package")
        models = self.conf.get("user.rvtorch:cpu_models", default={}, check_type=dict)
        runs = {name: m.get("qemu_cpu") for name, m in models.items()} or {"default": None}
        for name, qemu_cpu in runs.items():
            out = StringIO()
            self.run(shlex.join([*self._prefix(qemu_cpu), binary]), env="conanrun", stdout=out)
            text = out.getvalue()
            self.output.info(f"cpu {name}:\n{text.strip()}")
            if OK_LINE not in text:
                raise ConanException(f"fastflow test_package: cpu {name} printed no OK line")
