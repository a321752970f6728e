"""Builds a cblas program against the package and runs it: natively, or under QEMU when cross.

Cross runs need ``tools.build.cross_building:can_run=True`` and ``user.rvtorch:emulator`` (the
qemu-user command line, e.g. ``qemu-riscv64-static -L / -cpu rv64``, from the host profile).
``user.rvtorch:cpu_models`` = ``{"name": {"qemu_cpu": ..., "openblas_core": ...}}`` runs the
program once per QEMU CPU model and fails unless OpenBLAS picked the kernel set that model should
get (with DYNAMIC_ARCH), or the one TARGET it was built for (without).
"""

import os
import shlex
from io import StringIO

from conan import ConanFile
from conan.errors import ConanException
from conan.tools.build import can_run, cross_building
from conan.tools.cmake import CMake, cmake_layout

# The guest gets only these from the environment: a host's OPENBLAS_CORETYPE=Haswell would
# otherwise make a riscv64 guest fall back to the generic kernel (docs/facts.md).
GUEST_ENV_KEEP = ("PATH", "LD_LIBRARY_PATH", "QEMU_LD_PREFIX")


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
        has_lapack = bool(self.dependencies["openblas"].options.build_lapack)
        cmake.configure(variables={"TEST_LAPACK": "ON" if has_lapack else "OFF"})
        cmake.build()

    def _expected_core(self, model):
        openblas = self.dependencies["openblas"]
        if openblas.options.dynamic_arch:
            return model.get("openblas_core")
        return str(openblas.options.target) if openblas.options.target else None

    def _guest_run(self, binary, qemu_cpu):
        emulator = self.conf.get("user.rvtorch:emulator", default=None)
        prefix = []
        if cross_building(self):
            if not emulator:
                raise ConanException(
                    f"openblas test_package: cross run needs -c {EMULATOR_CONF}=qemu-<arch>-static"
                )
            prefix = shlex.split(emulator)
            if qemu_cpu:
                # The profile's emulator names a baseline -cpu; this run names its own.
                if "-cpu" in prefix:
                    at = prefix.index("-cpu")
                    del prefix[at:at + 2]
                prefix += ["-cpu", qemu_cpu]
        # Expanded by the shell after conanrun is sourced, so LD_LIBRARY_PATH has the package.
        keep = " ".join(f'${{{k}:+{k}="${k}"}}' for k in GUEST_ENV_KEEP)
        cmd = f"env -i {keep} OPENBLAS_VERBOSE=2 OPENBLAS_NUM_THREADS=1 " + shlex.join(
            [*prefix, binary]
        )
        out = StringIO()
        # stderr too: OPENBLAS_VERBOSE=2 writes "Core: ..." there.
        self.run(cmd + " 2>&1", env="conanrun", stdout=out)
        return out.getvalue()

    def test(self):
        if not can_run(self):
            self.output.warning(
                "openblas test_package: not run (cross build without "
                "tools.build.cross_building:can_run=True and an emulator)"
            )
            return
        binary = os.path.join(self.cpp.build.bindir, "test_package")
        models = self.conf.get("user.rvtorch:cpu_models", default={}, check_type=dict)
        if not models:
            self.output.info(self._guest_run(binary, None))
            return
        for name, model in models.items():
            text = self._guest_run(binary, model.get("qemu_cpu"))
            self.output.info(f"cpu {name}:\n{text.strip()}")
            corename = next(
                (ln.split(":", 1)[1].strip() for ln in text.splitlines()
                 if ln.startswith("openblas corename:")),
                "",
            )
            expected = self._expected_core(model)
            self.output.info(f"cpu {name}: kernel {corename} (expected {expected})")
            if expected and corename.lower() != expected.lower():
                raise ConanException(
                    f"openblas test_package: cpu {name} ({model.get('qemu_cpu')}) picked kernel "
                    f"{corename!r}, expected {expected!r}"
                )
