"""Builds the FastFlow checks and runs them: natively, or under QEMU when cross-building
(``tools.build.cross_building:can_run=True`` plus ``user.rvtorch:emulator``)."""

import os
import shlex

from conan import ConanFile
from conan.errors import ConanException
from conan.tools.build import can_run, cross_building
from conan.tools.cmake import CMake, cmake_layout

EMULATOR_CONF = "user.rvtorch:emulator"


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

    def test(self):
        if not can_run(self):
            self.output.warning("fastflow test_package: not run (cross build, no emulator)")
            return
        binary = os.path.join(self.cpp.build.bindir, "test_package")
        prefix = []
        if cross_building(self):
            emulator = self.conf.get("user.rvtorch:emulator", default=None)
            if not emulator:
                raise ConanException(
                    f"fastflow test_package: cross run needs -c {EMULATOR_CONF}=qemu-<arch>-static"
                )
            prefix = shlex.split(emulator)
        self.run(shlex.join([*prefix, binary]), env="conanrun")
