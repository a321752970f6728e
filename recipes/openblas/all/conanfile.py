"""OpenBLAS, cross-built with its own Makefiles (the build Debian and OpenBLAS's CI use).

Why make and not OpenBLAS's CMake: the Makefile build is the one whose riscv64 DYNAMIC_ARCH
(RISCV64_GENERIC + ZVL128B + ZVL256B, chosen at run time) is exercised upstream and by Debian,
and it installs the headers straight into include/ (PyTorch's FindOpenBLAS looks there).
"""

import os
import re
import subprocess

from conan import ConanFile
from conan.errors import ConanException, ConanInvalidConfiguration
from conan.tools.build import build_jobs, cross_building
from conan.tools.files import copy, get, load, rm, rmdir
from conan.tools.scm import Version

required_conan_version = ">=2.2"

# Default kernel sets for DYNAMIC_ARCH when the consumer gives no dynamic_list.
# riscv64: the RVV 1.0 kernels need GCC >= 14; C910V (RVV 0.7.1) is left out on purpose.
DEFAULT_DYNAMIC_LIST = {
    "riscv64": "RISCV64_GENERIC RISCV64_ZVL128B RISCV64_ZVL256B",
}
# The baseline TARGET a DYNAMIC_ARCH cross build names (OpenBLAS must be told one).
BASELINE_TARGET = {
    "riscv64": "RISCV64_GENERIC",
    "armv8": "ARMV8",
    "x86_64": "GENERIC",
}
TARGET_NAME = re.compile(r"^[A-Z0-9_]+$")
# options.precisions letter -> OpenBLAS make variable
PRECISIONS = "sdcz"
PRECISION_VARS = {"s": "BUILD_SINGLE", "d": "BUILD_DOUBLE", "c": "BUILD_COMPLEX",
                  "z": "BUILD_COMPLEX16"}


class OpenBLASConan(ConanFile):
    name = "openblas"
    description = "Optimized BLAS (and optionally C LAPACK) with run-time kernel selection"
    license = "BSD-3-Clause"
    homepage = "https://www.openblas.net"
    url = "https://github.com/OpenMathLib/OpenBLAS"
    topics = ("blas", "lapack", "linear-algebra", "riscv", "rvv")
    package_type = "library"
    settings = "os", "arch", "compiler", "build_type"
    options = {
        "shared": [True, False],
        "fPIC": [True, False],
        "target": [None, "ANY"],
        "dynamic_arch": [True, False],
        "dynamic_list": [None, "ANY"],
        "threading": ["pthread", "openmp", "none"],
        "num_threads": ["ANY"],
        "build_lapack": [True, False],
        "precisions": ["ANY"],
    }
    default_options = {
        "shared": True,
        "fPIC": True,
        "target": None,
        "dynamic_arch": True,
        "dynamic_list": None,
        "threading": "pthread",
        "num_threads": "64",
        "build_lapack": False,
        "precisions": "sdcz",
    }
    options_description = {
        "shared": "Build libopenblas.so (True) or libopenblas.a (False)",
        "target": "OpenBLAS TARGET (TargetList.txt), e.g. RISCV64_ZVL256B or ARMV8; with "
        "dynamic_arch it is the baseline the build names (default: the arch's generic one)",
        "dynamic_arch": "Build several kernel sets and pick one at run time (DYNAMIC_ARCH=1)",
        "dynamic_list": "Space-separated kernel sets for dynamic_arch (DYNAMIC_LIST); "
        "default for riscv64: RISCV64_GENERIC RISCV64_ZVL128B RISCV64_ZVL256B",
        "threading": "pthread (USE_THREAD=1), openmp (USE_OPENMP=1) or none (single-threaded)",
        "num_threads": "Largest thread count the library supports (NUM_THREADS)",
        "build_lapack": "Include LAPACK. Upstream tarballs: OpenBLAS's C translation (C_LAPACK=1, "
        "no Fortran compiler needed). Debian's +ds repacks have no lapack-netlib/: OpenBLAS's own "
        "LAPACK routines plus the rest from the target's reference liblapack_pic.a (Debian's "
        "liblapack-dev), as Debian builds its OpenBLAS; conf user.openblas:lapack_pic=PATH",
        "precisions": "Letters of the types to build: s (float), d (double), c (complex), "
        "z (double complex); e.g. sd halves the build (BUILD_SINGLE/BUILD_DOUBLE/...)",
    }

    def config_options(self):
        if self.settings.os == "Windows":
            del self.options.fPIC

    def configure(self):
        if self.options.shared:
            self.options.rm_safe("fPIC")
        # C only: no C++ runtime in the package.
        self.settings.rm_safe("compiler.libcxx")
        self.settings.rm_safe("compiler.cppstd")

    @property
    def _arch(self):
        return str(self.settings.arch)

    @property
    def _is_ds(self):
        return "+ds" in str(self.version)

    @property
    def _upstream_version(self):
        return Version(str(self.version).split("+", 1)[0])

    @property
    def _dynamic_list(self):
        if self.options.dynamic_list:
            return str(self.options.dynamic_list).split()
        return DEFAULT_DYNAMIC_LIST.get(self._arch, "").split()

    @property
    def _target(self):
        if self.options.target:
            return str(self.options.target)
        if self.options.dynamic_arch:
            listed = self._dynamic_list
            return BASELINE_TARGET.get(self._arch) or (listed[0] if listed else None)
        return None

    def validate(self):
        if self.settings.os != "Linux":
            raise ConanInvalidConfiguration("openblas: this recipe builds for Linux only")
        names = [*self._dynamic_list, *([self._target] if self._target else [])]
        for name in names:
            if not TARGET_NAME.match(name):
                raise ConanInvalidConfiguration(
                    f"openblas: {name!r} is not an OpenBLAS TARGET name (upper case, e.g. ARMV8)"
                )
        precisions = str(self.options.precisions)
        if not precisions or set(precisions) - set(PRECISIONS):
            raise ConanInvalidConfiguration(
                f"openblas: precisions={precisions!r}: use letters of {PRECISIONS!r} (e.g. sd)"
            )
        if self.options.dynamic_arch and set(precisions) != set(PRECISIONS):
            # 0.3.34's DYNAMIC_ARCH setparam code uses the complex blocking parameters.
            raise ConanInvalidConfiguration(
                "openblas: dynamic_arch needs every precision (precisions=sdcz)"
            )
        if self.options.build_lapack and set(precisions) != set(PRECISIONS):
            # LAPACK's complex routines call the complex BLAS.
            raise ConanInvalidConfiguration(
                "openblas: build_lapack needs every precision (precisions=sdcz)"
            )
        if self.options.dynamic_list and not self.options.dynamic_arch:
            raise ConanInvalidConfiguration("openblas: dynamic_list needs dynamic_arch=True")
        if cross_building(self) and not self._target:
            raise ConanInvalidConfiguration(
                "openblas: a cross build must name a TARGET: set -o openblas/*:target=... "
                "or -o openblas/*:dynamic_arch=True"
            )
        rvv = [n for n in names if "ZVL" in n or n == "x280"]
        if rvv and self._arch == "riscv64":
            compiler = self.settings.compiler
            if compiler == "gcc" and Version(str(compiler.version)) < "14":
                raise ConanInvalidConfiguration(
                    f"openblas: RVV 1.0 kernels ({', '.join(rvv)}) need GCC >= 14, "
                    f"got gcc {compiler.version}"
                )
            if self.options.dynamic_arch and self._upstream_version < "0.3.34":
                raise ConanInvalidConfiguration(
                    f"openblas/{self.version}: riscv64 DYNAMIC_ARCH builds cleanly from "
                    "0.3.34 on (0.3.33 and older fail in dynamic_riscv64.c)"
                )

    def source(self):
        # Conan's own download: the download cache (s/<sha256>) first, then the pinned URL, the
        # sha256 checked. `rvtorch deps` fills and verifies that cache before Conan starts, so
        # offline a missing file is its one-line error (exit 3), not a download failure here.
        data = self.conan_data["sources"][str(self.version)]
        get(self, url=data["url"], sha256=data["sha256"], strip_root=True)

    def _check_known_targets(self):
        """Reject a TARGET/DYNAMIC_LIST name OpenBLAS does not know, before a long make."""
        listed = load(self, os.path.join(self.source_folder, "TargetList.txt"))
        # Lines start with the name, some followed by a note: "RISCV64_GENERIC (e.g. ...)".
        known = set(re.findall(r"^([A-Z][A-Z0-9_]+)\b", listed, re.MULTILINE)) | {"GENERIC"}
        names = [*self._dynamic_list, *([self._target] if self._target else [])]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConanInvalidConfiguration(
                f"openblas/{self.version}: unknown TARGET {', '.join(unknown)} "
                "(see TargetList.txt in the OpenBLAS source)"
            )

    def _compiler(self, lang):
        executables = self.conf.get("tools.build:compiler_executables", default={}, check_type=dict)
        env = {"c": "CC", "fortran": "FC"}[lang]
        return executables.get(lang) or os.environ.get(env) or ("gcc" if lang == "c" else None)

    def _make_vars(self):
        opts = self.options
        v = {
            "CC": self._compiler("c"),
            "HOSTCC": os.environ.get("CC_FOR_BUILD", "gcc"),
            "BINARY": "64" if self._arch in ("riscv64", "armv8", "x86_64") else "32",
            "NUM_THREADS": str(opts.num_threads),
            "NO_AFFINITY": "1",
            "NO_WARMUP": "1",
            # No cross gfortran in the image: every Fortran part is off or its C translation.
            "NOFORTRAN": "1",
            "COMMON_OPT": "-O2",
            "MAKE_NB_JOBS": str(build_jobs(self)),
        }
        if self._target:
            v["TARGET"] = self._target
        if opts.dynamic_arch:
            v["DYNAMIC_ARCH"] = "1"
            # OpenBLAS always adds the arch's baseline core to DYNAMIC_LIST itself; naming it
            # again would build its kernels twice (duplicate symbols).
            baseline = BASELINE_TARGET.get(self._arch)
            extra = [n for n in self._dynamic_list if n != baseline]
            if extra:
                v["DYNAMIC_LIST"] = " ".join(extra)
        if opts.threading == "openmp":
            v.update(USE_THREAD="1", USE_OPENMP="1")
        elif opts.threading == "pthread":
            v.update(USE_THREAD="1", USE_OPENMP="0")
        else:
            v.update(USE_THREAD="0", USE_OPENMP="0")
        if opts.build_lapack and self._is_ds:
            # OpenBLAS's LAPACK routines (getrf, potrf, ...) are built; the reference ones are
            # merged in from liblapack_pic.a after `make libs` (see _merge_reference_lapack).
            v.update(NO_LAPACK="0", NO_LAPACKE="1")
        elif opts.build_lapack:
            v["C_LAPACK"] = "1"
        else:
            v.update(NO_LAPACK="1", NO_LAPACKE="1")
        if opts.shared:
            v["NO_STATIC"] = "1"
        else:
            v["NO_SHARED"] = "1"
        if set(str(opts.precisions)) != set(PRECISIONS):
            for letter in str(opts.precisions):
                v[PRECISION_VARS[letter]] = "1"
        if self.settings.build_type == "Debug":
            v["DEBUG"] = "1"
        # BUILD_HFLOAT16 stays off: it disables the ZVL kernels on cores without Zfh/Zvfh.
        return v

    def _make(self, targets):
        args = " ".join(f'{k}="{val}"' for k, val in self._make_vars().items())
        self.run(f"make -j{build_jobs(self)} {args} {targets}", cwd=self.source_folder)

    def _target_file(self, name):
        """A file of the target's library path (the image's multiarch sysroot), via the compiler."""
        conf = self.conf.get(f"user.openblas:{name.split('.')[0].removeprefix('lib')}",
                             default=None)
        if conf:
            return conf
        out = subprocess.run([self._compiler("c"), f"-print-file-name={name}"],
                             capture_output=True, text=True, check=False).stdout.strip()
        return out if os.path.isabs(out) and os.path.isfile(out) else None

    def _binutil(self, tool):
        """The cross binutil matching CC (riscv64-linux-gnu-gcc-14 -> riscv64-linux-gnu-nm)."""
        m = re.match(r"^(.*-)(?:gcc|cc|clang)(?:-[\d.]+)?$", os.path.basename(self._compiler("c")))
        return f"{m.group(1)}{tool}" if m else tool

    def _merge_reference_lapack(self):
        """Debian's +ds source has no lapack-netlib/: take every reference LAPACK object of the
        target's liblapack_pic.a that OpenBLAS does not implement itself into the archive."""
        pic = self._target_file("liblapack_pic.a")
        if not pic:
            raise ConanException(
                f"openblas/{self.version}: build_lapack on a +ds source needs the target's "
                "liblapack_pic.a (Debian liblapack-dev for the target); install it or set "
                "-c user.openblas:lapack_pic=PATH"
            )
        archives = [f for f in os.listdir(self.source_folder)
                    if re.match(r"^libopenblas.*\.a$", f)
                    and not os.path.islink(os.path.join(self.source_folder, f))]
        if len(archives) != 1:
            raise ConanException(f"openblas: expected one built archive, found {archives}")
        archive = os.path.join(self.source_folder, archives[0])
        nm, ar = self._binutil("nm"), self._binutil("ar")

        def defined(path):
            out = subprocess.run([nm, "-g", "--defined-only", path], capture_output=True,
                                 text=True, check=True).stdout
            return {f[2] for f in (line.split() for line in out.splitlines()) if len(f) == 3}

        have = defined(archive)
        work = os.path.join(self.build_folder, "lapack-reference")
        rmdir(self, work)
        os.makedirs(work)
        subprocess.run([ar, "x", pic], cwd=work, check=True)
        kept, dropped = [], 0
        for obj in sorted(os.listdir(work)):
            path = os.path.join(work, obj)
            if defined(path) & have:
                os.unlink(path)  # OpenBLAS's optimised version (or its xerbla/lsame) wins
                dropped += 1
            else:
                # A prefix keeps a reference object from replacing an OpenBLAS member of the
                # same file name.
                renamed = os.path.join(work, f"lapackref_{obj}")
                os.rename(path, renamed)
                kept.append(renamed)
        if not kept:
            raise ConanException(f"openblas: {pic} added no LAPACK routine")
        subprocess.run([ar, "rs", archive, *kept], check=True)
        self.output.info(f"reference LAPACK from {pic}: {len(kept)} objects merged, "
                         f"{dropped} left to OpenBLAS's own routines")

    def build(self):
        self._check_known_targets()
        shared = " shared" if self.options.shared else ""
        if self.options.build_lapack and self._is_ds:
            self._make("libs")
            self._merge_reference_lapack()
            if self.options.shared:
                # What `make shared` does without its netlib step; the reference objects need
                # the Fortran runtime.
                gfortran = self._target_file("libgfortran.so.5")
                if not gfortran:
                    raise ConanException(
                        "openblas: the merged reference LAPACK needs the target's "
                        "libgfortran.so.5; install it or set -c user.openblas:gfortran=PATH"
                    )
                self._make(f'-C exports so EXTRALIB="{gfortran}"')
            return
        # `libs netlib shared` skips the test suites, which would run target code on the build host.
        self._make(f"libs netlib{shared}")

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        self._make(f'install PREFIX="{self.package_folder}"')
        # Consumers get CMake/pkg-config files from Conan's generators; the installed ones carry
        # absolute build paths.
        rmdir(self, os.path.join(self.package_folder, "lib", "cmake"))
        rmdir(self, os.path.join(self.package_folder, "lib", "pkgconfig"))
        rm(self, "*.la", os.path.join(self.package_folder, "lib"))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "OpenBLAS")
        self.cpp_info.set_property("cmake_target_name", "OpenBLAS::OpenBLAS")
        self.cpp_info.set_property("pkg_config_name", "openblas")
        self.cpp_info.libs = ["openblas"]
        self.cpp_info.system_libs = ["m"]
        if self.options.build_lapack and self._is_ds and not self.options.shared:
            self.cpp_info.system_libs.append("gfortran")  # the reference LAPACK objects
        if self.options.threading != "none":
            self.cpp_info.system_libs.append("pthread")
        if self.options.threading == "openmp":
            self.cpp_info.system_libs.append("gomp")
        # For `BLAS=OpenBLAS` PyTorch builds: FindOpenBLAS looks in $OpenBLAS_HOME/include.
        self.runenv_info.define_path("OpenBLAS_HOME", self.package_folder)
        self.buildenv_info.define_path("OpenBLAS_HOME", self.package_folder)
