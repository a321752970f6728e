"""FastFlow: header-only C++ parallel building blocks (pipeline, farm, all-to-all, feedback).

The package copies ``ff/`` itself: FastFlow's own ``cmake --install`` installs a stale header
list and misses ``ff/d/`` (docs/recipes.md). Fixes the pinned headers need are patches listed in
``conandata.yml`` (each with its reason and upstream status), applied to the unpacked source.
"""

import os

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.build import check_min_cppstd
from conan.tools.files import apply_conandata_patches, copy, export_conandata_patches, get
from conan.tools.layout import basic_layout

required_conan_version = ">=2.2"


class FastFlowConan(ConanFile):
    name = "fastflow"
    description = "High-level parallel patterns and building blocks for C++ (shared memory)"
    license = "LGPL-3.0-only OR MIT"
    homepage = "https://github.com/fastflow/fastflow"
    url = "https://github.com/fastflow/fastflow"
    topics = ("parallel", "streaming", "pipeline", "farm", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    no_copy_source = True
    options = {
        "distributed": [False, True],
        "thread_mapping": [False, True],
        "blocking_mode": [False, True],
    }
    default_options = {
        "distributed": False,
        "thread_mapping": False,
        "blocking_mode": False,
    }
    options_description = {
        "distributed": "Distributed FastFlow (ff/dff.hpp); False defines DISABLE_FF_DISTRIBUTED "
        "so the same program runs in shared memory",
        "thread_mapping": "Pin threads with FastFlow's mapping string; False defines "
        "NO_DEFAULT_MAPPING (the mapping string needs hwloc's mapping_string.sh at build time)",
        "blocking_mode": "Idle nodes sleep on condition variables instead of spinning "
        "(BLOCKING_MODE); kinder to emulated and oversubscribed cores",
    }

    def export_sources(self):
        export_conandata_patches(self)

    def layout(self):
        basic_layout(self, src_folder="src")

    def package_id(self):
        self.info.clear()

    def validate(self):
        if self.settings.get_safe("compiler.cppstd"):
            check_min_cppstd(self, 17)
        if self.options.distributed:
            raise ConanInvalidConfiguration(
                "fastflow: distributed=True needs cereal, MPI (or DFF_EXCLUDE_MPI) and the MTCL "
                "git submodule, which the pinned archive lacks; use distributed=False"
            )

    def source(self):
        # Conan's own download: the download cache (s/<sha256>) first, then GitHub, the sha256
        # checked. FastFlow is only on GitHub: offline, `rvtorch deps fetch --source-mirror DIR`
        # (or $RVTORCH_SOURCE_MIRROR) verifies the file into that cache before Conan starts.
        get(self, **self.conan_data["sources"][str(self.version)], strip_root=True)
        apply_conandata_patches(self)

    def package(self):
        copy(self, "LICENSE*", self.source_folder, os.path.join(self.package_folder, "licenses"))
        copy(self, "*", os.path.join(self.source_folder, "ff"),
             os.path.join(self.package_folder, "include", "ff"))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "fastflow")
        self.cpp_info.set_property("cmake_target_name", "fastflow::fastflow")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.system_libs = ["pthread"]
        if not self.options.distributed:
            self.cpp_info.defines.append("DISABLE_FF_DISTRIBUTED")
        if not self.options.thread_mapping:
            self.cpp_info.defines.append("NO_DEFAULT_MAPPING")
        if self.options.blocking_mode:
            self.cpp_info.defines.append("BLOCKING_MODE")
