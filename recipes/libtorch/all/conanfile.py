"""libtorch: the C++ side (headers, shared libraries, CMake config) of a torch build that exists.

Inputs, one of (``-c`` confs, so they stay out of recipe options that would need a value per
machine):

* ``user.libtorch:wheel=PATH``: a torch wheel built by this toolkit (``rvtorch build``);
* ``user.libtorch:torch_dir=PATH``: an unpacked wheel's ``torch/`` folder;
* ``user.libtorch:sysroot=PATH``: a target root with Debian's ``libtorch-dev`` installed.

Consumers either ``find_package(Torch)`` (the TorchConfig.cmake torch ships, found through the
package's build dirs on CMAKE_PREFIX_PATH) or link ``libtorch::libtorch`` (Conan's CMakeDeps).
"""

import glob
import hashlib
import os
import zipfile

from conan import ConanFile
from conan.errors import ConanException, ConanInvalidConfiguration
from conan.tools.files import copy

required_conan_version = ">=2.2"

# arch setting -> Debian multiarch triple (for the sysroot layout)
MULTIARCH = {
    "riscv64": "riscv64-linux-gnu",
    "armv8": "aarch64-linux-gnu",
    "x86_64": "x86_64-linux-gnu",
}
# What a C++ consumer links, most dependent first.
LIBS = ["torch", "torch_cpu", "c10"]


def _digest_tree(root, patterns=("lib/*.so*", "version.py", "share/cmake/Torch/*.cmake")):
    """Digest (names, sizes, mtimes) of the files a consumer uses: cheap on 300 MB of libs."""
    h = hashlib.sha256()
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            st = os.stat(path)
            h.update(f"{os.path.relpath(path, root)}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return h.hexdigest()


class LibtorchConan(ConanFile):
    name = "libtorch"
    description = "PyTorch's C++ API and libraries, taken from a torch wheel or a Debian sysroot"
    license = "BSD-3-Clause"
    homepage = "https://pytorch.org"
    url = "https://github.com/pytorch/pytorch"
    topics = ("pytorch", "deep-learning", "tensor")
    package_type = "shared-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"origin": ["wheel", "debian"], "input_digest": [None, "ANY"]}
    default_options = {"origin": "wheel", "input_digest": None}
    options_description = {
        "origin": "wheel: user.libtorch:wheel or user.libtorch:torch_dir; "
        "debian: libtorch-dev inside user.libtorch:sysroot",
        "input_digest": "set by the recipe (sha256 of the input), not by users",
    }
    upload_policy = "skip"
    build_policy = "missing"

    def _input(self, origin=None):
        origin = origin if origin is not None else self.options.origin
        wheel = self.conf.get("user.libtorch:wheel", default=None)
        torch_dir = self.conf.get("user.libtorch:torch_dir", default=None)
        sysroot = self.conf.get("user.libtorch:sysroot", default=None)
        if origin == "debian":
            if not sysroot:
                raise ConanInvalidConfiguration(
                    "libtorch: origin=debian needs -c user.libtorch:sysroot=PATH "
                    "(a target root with libtorch-dev installed)"
                )
            return "sysroot", sysroot
        if wheel:
            return "wheel", wheel
        if torch_dir:
            return "torch_dir", torch_dir
        raise ConanInvalidConfiguration(
            "libtorch: name the torch build to package: -c user.libtorch:wheel=PATH.whl or "
            "-c user.libtorch:torch_dir=PATH/torch (or -o libtorch/*:origin=debian with "
            "-c user.libtorch:sysroot=PATH)"
        )

    def validate(self):
        if self.settings.os != "Linux":
            raise ConanInvalidConfiguration("libtorch: this recipe packages Linux builds only")
        kind, path = self._input()
        if not os.path.exists(path):
            raise ConanInvalidConfiguration(f"libtorch: {kind} {path} does not exist")

    def package_id(self):
        # The same settings with another wheel must be another package.
        kind, path = self._input(self.info.options.origin)
        if kind == "wheel":
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            digest = h.hexdigest()
        elif kind == "torch_dir":
            digest = _digest_tree(path)
        else:
            triple = MULTIARCH.get(str(self.info.settings.arch), "")
            digest = _digest_tree(os.path.join(path, "usr", "lib", triple),
                                  ("libtorch*.so*", "libc10*.so*"))
        self.info.options.input_digest = digest

    def build(self):
        kind, path = self._input()
        if kind != "wheel":
            return
        # Only the C++ side: torch/include, torch/lib, torch/share (no Python modules).
        with zipfile.ZipFile(path) as whl:
            members = [
                m for m in whl.namelist()
                if m.startswith(("torch/include/", "torch/lib/", "torch/share/", "torch.libs/"))
                or m == "torch/version.py"
            ]
            if not any(m.startswith("torch/lib/libtorch") for m in members):
                raise ConanException(f"libtorch: {path} has no torch/lib/libtorch*.so")
            whl.extractall(self.build_folder, members)

    def package(self):
        kind, path = self._input()
        dst = self.package_folder
        if kind == "sysroot":
            self._package_debian(path)
            return
        torch = os.path.join(self.build_folder, "torch") if kind == "wheel" else path
        if not os.path.isfile(os.path.join(torch, "share", "cmake", "Torch", "TorchConfig.cmake")):
            raise ConanException(f"libtorch: {torch} has no share/cmake/Torch/TorchConfig.cmake")
        copy(self, "*", os.path.join(torch, "include"), os.path.join(dst, "include"))
        copy(self, "*.so*", os.path.join(torch, "lib"), os.path.join(dst, "lib"))
        # A repaired wheel keeps OpenBLAS, gloo, protobuf... in torch.libs/ (hash-named, found
        # through the RPATH $ORIGIN/../../torch.libs). In the package they sit beside libtorch
        # in lib/, which the same RPATH's $ORIGIN entry covers.
        if kind == "wheel":
            copy(self, "*.so*", os.path.join(self.build_folder, "torch.libs"),
                 os.path.join(dst, "lib"))
        copy(self, "*", os.path.join(torch, "share", "cmake"), os.path.join(dst, "share", "cmake"))
        copy(self, "version.py", torch, os.path.join(dst, "share", "libtorch"))

    def _package_debian(self, sysroot):
        triple = MULTIARCH.get(str(self.settings.arch))
        libdir = os.path.join(sysroot, "usr", "lib", triple)
        if not glob.glob(os.path.join(libdir, "libtorch.so*")):
            raise ConanException(f"libtorch: no libtorch.so in {libdir} (install libtorch-dev)")
        dst = self.package_folder
        inc = os.path.join(sysroot, "usr", "include")
        for sub in ("ATen", "c10", "caffe2", "torch"):
            copy(self, "*", os.path.join(inc, sub), os.path.join(dst, "include", sub))
        # Debian's layout is kept (lib/<triple>, its CMake files in lib/<triple>/cmake): the
        # CMake target files find the libraries relative to their own location.
        for pattern in ("libtorch*.so*", "libc10*.so*", "libshm*.so*"):
            copy(self, pattern, libdir, os.path.join(dst, "lib", triple))
        for pkg in ("Torch", "Caffe2"):
            copy(self, f"{pkg}/*", os.path.join(libdir, "cmake"),
                 os.path.join(dst, "lib", triple, "cmake"))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "libtorch")
        self.cpp_info.set_property("cmake_target_name", "libtorch::libtorch")
        api = os.path.join("include", "torch", "csrc", "api", "include")
        self.cpp_info.includedirs = ["include", api]
        self.cpp_info.libs = LIBS
        triple = MULTIARCH.get(str(self.settings.arch), "")
        debian_libdir = os.path.join("lib", triple)
        if triple and os.path.isdir(os.path.join(self.package_folder, debian_libdir)):
            self.cpp_info.libdirs = [debian_libdir]
            cmake_dirs = [os.path.join(debian_libdir, "cmake")]
        else:
            cmake_dirs = [os.path.join("share", "cmake")]
        self.cpp_info.system_libs = ["pthread", "m", "dl"]
        self.cpp_info.defines = ["_GLIBCXX_USE_CXX11_ABI=1"]
        # find_package(Torch) finds torch's own TorchConfig.cmake through CMAKE_PREFIX_PATH.
        self.cpp_info.builddirs = cmake_dirs
        for libdir in self.cpp_info.libdirs:
            self.runenv_info.prepend_path("LD_LIBRARY_PATH",
                                          os.path.join(self.package_folder, libdir))
        # The linker resolves libtorch_cpu's own dependencies (bundled beside it) at link time.
        rpath_link = [f"-Wl,-rpath-link,{os.path.join(self.package_folder, d)}"
                      for d in self.cpp_info.libdirs]
        self.cpp_info.exelinkflags = rpath_link
        self.cpp_info.sharedlinkflags = rpath_link
