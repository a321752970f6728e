"""Consumer recipe of the FastFlow federated-learning programs (not a package of its own).

``conan build`` with the project's host/build profiles resolves FastFlow and libtorch from the
repo's recipes (the project-local Conan home, ``rvtorch.conan``) and builds with CMakeDeps +
CMakeToolchain. The versions must match ``rvtorch.deps`` (a unit test checks it).
"""

from conan import ConanFile
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout

required_conan_version = ">=2.2"


class FastFlowFederatedLearning(ConanFile):
    name = "rvtorch-fastflow-fl"
    settings = "os", "arch", "compiler", "build_type"
    requires = ("fastflow/3.0.1+d476f66", "libtorch/2.6.0")
    # Blocking channels: with more FastFlow threads than (emulated) cores, spinning idle nodes
    # would take the CPU from the ones that train.
    default_options = {"fastflow/*:blocking_mode": True}  # noqa: RUF012 (Conan class attr)

    def layout(self):
        cmake_layout(self)

    def generate(self):
        tc = CMakeToolchain(self)
        tc.cache_variables["FL_FASTFLOW"] = True
        # Builds go to the cache (--output-folder): leave no CMakeUserPresets.json in the repo.
        tc.user_presets_path = False
        tc.generate()
        CMakeDeps(self).generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure()
        cmake.build()
