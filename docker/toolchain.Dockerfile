# The rvtorch toolchain image: Debian (targets.toml project.suite) amd64 that cross-builds for ONE target of
# toolchains/targets.toml (`rvtorch image build --arch A` passes the target's values as build
# arguments; nothing here names an arch). Stages:
#   base   apt configured for lean, retrying installs
#   tools  everything that does not depend on the target: cmake, ninja, ccache, qemu-user (static),
#          Python + a venv with crossenv/build/conan (hash-pinned). Shared by every target's
#          image: built once, reused from the layer cache.
#   cross  the target's gcc cross compiler, its multiarch sysroot (dpkg --add-architecture +
#          toolchains/sysroot-packages.txt), toolchain files, Conan profiles and the baked-in
#          cross environment.
# BASE_IMAGE is targets.toml project.base_image, Debian of the project's suite: pulled where a
# registry is reachable, made offline by `rvtorch image base` (debootstrap + import) where not.
ARG BASE_IMAGE

FROM ${BASE_IMAGE} AS base
ARG DEBIAN_MIRROR=
SHELL ["/bin/bash", "-Eeuo", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8
# Site CA certificates (rvtorch stages /usr/local/share/ca-certificates of the build machine,
# or $RVTORCH_CA_CERTS, as certs/): installing ca-certificates in the tools stage adds them to
# the system store, so pip/conan reach PyPI through a TLS-inspecting proxy too.
COPY certs/ /usr/local/share/ca-certificates/
# No recommends keeps the image (and the CI's cold build) small; retries ride out mirror hiccups.
# A given mirror replaces whatever the base image was bootstrapped or pulled with.
# Documentation, man pages and translations are not installed (copyright files are kept).
RUN printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nAcquire::Retries "5";\nAcquire::Languages "none";\n' \
      > /etc/apt/apt.conf.d/90rvtorch \
 && printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
      'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' \
      'path-exclude=/usr/share/locale/*' 'path-exclude=/usr/share/lintian/*' \
      > /etc/dpkg/dpkg.cfg.d/90rvtorch-nodoc \
 && if [ -n "${DEBIAN_MIRROR}" ]; then \
      rm -f /etc/apt/sources.list.d/debian.sources; \
      printf 'deb %s %s main\n' "${DEBIAN_MIRROR}" "$(. /etc/os-release && echo "${VERSION_CODENAME}")" \
        > /etc/apt/sources.list; \
    fi

FROM base AS tools
SHELL ["/bin/bash", "-Eeuo", "pipefail", "-c"]
# The QEMU user emulators of all targets (targets.toml qemu_binary: "qemu-<arch>-static ...");
# Debian's qemu-user(-static) carries static emulators for ~30 architectures (465 MB): keep ours.
ARG QEMU_BINARIES
# The build machine's Python (targets.toml project.python; the target's is the same version).
ARG PYTHON_VERSION
# Native g++ is for host-side generators of cross builds (SLEEF, protoc plugins); protobuf-compiler
# must be the build machine's protoc matching the target's libprotobuf-dev version.
# Versions are not pinned (DL3008): a Debian point release drops the old ones from the archive;
# /opt/rvtorch/packages.txt records what an image got.
# hadolint ignore=DL3008
RUN test -n "${QEMU_BINARIES}" && test -n "${PYTHON_VERSION}" \
 && { echo 'path-exclude=/usr/bin/qemu-*'; \
      for q in ${QEMU_BINARIES}; do \
        echo "path-include=/usr/bin/${q}"; echo "path-include=/usr/bin/${q%-static}"; \
      done; } > /etc/dpkg/dpkg.cfg.d/90rvtorch-qemu \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates cmake ninja-build ccache git patch make file pkgconf xz-utils zstd \
      g++ qemu-user-static patchelf protobuf-compiler \
      "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" "python${PYTHON_VERSION}-dev" \
 && for q in ${QEMU_BINARIES}; do "${q}" --version; done \
 && rm -rf /var/lib/apt/lists/*
COPY docker/toolchain-requirements.txt /opt/rvtorch/toolchain-requirements.txt
RUN "python${PYTHON_VERSION}" -m venv /opt/rvtorch/venv \
 && PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/rvtorch/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
      --require-hashes -r /opt/rvtorch/toolchain-requirements.txt
ENV PATH=/opt/rvtorch/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

FROM tools AS cross
SHELL ["/bin/bash", "-Eeuo", "pipefail", "-c"]
# Values of one [target.*] row of toolchains/targets.toml.
ARG TARGET_ARCH
ARG CROSS_TRIPLE
ARG DEBIAN_ARCH
ARG GCC_VERSION
COPY toolchains/sysroot-packages.txt /opt/rvtorch/sysroot-packages.txt
# The sysroot is multiarch: target libraries and headers land in /usr/lib/<triple> and
# /usr/include/<triple> next to the amd64 ones, where Debian's cross gcc looks. Never install
# python3:<arch> (or python3-dev:<arch>): it replaces the build python (docs/facts.md);
# libpython3.X-dev:<arch> carries the headers and libpython.
# hadolint ignore=DL3008
RUN test -n "${TARGET_ARCH}" && test -n "${CROSS_TRIPLE}" && test -n "${DEBIAN_ARCH}" \
 && test -n "${GCC_VERSION}" \
 && dpkg --add-architecture "${DEBIAN_ARCH}" \
 && sed -e 's/#.*//' /opt/rvtorch/sysroot-packages.txt | awk -v a="${DEBIAN_ARCH}" \
      'NF == 1 { print $1 ":" a } NF > 1 { for (i = 2; i <= NF; i++) { w = $i; gsub(/[][]/, "", w); if (w == a) print $1 ":" a } }' \
      > /opt/rvtorch/sysroot-packages.resolved \
 && apt-get update \
 && xargs -a /opt/rvtorch/sysroot-packages.resolved apt-get install -y --no-install-recommends \
      "g++-${GCC_VERSION}-${CROSS_TRIPLE}" "binutils-${CROSS_TRIPLE}" \
 && if dpkg-query -W "python3:${DEBIAN_ARCH}" >/dev/null 2>&1; then \
      echo "python3:${DEBIAN_ARCH} got installed: it would replace the build python" >&2; exit 1; \
    fi \
 && dpkg-query -W -f '${binary:Package} ${Version}\n' > /opt/rvtorch/packages.txt \
 && rm -rf /var/lib/apt/lists/*
COPY toolchains/${CROSS_TRIPLE}.cmake /opt/rvtorch/toolchains/${CROSS_TRIPLE}.cmake
COPY toolchains/conan/ /opt/rvtorch/toolchains/conan/
# The image's self-test travels with it: `rvtorch image test` of any image runs its own version.
COPY docker/selftest/ /opt/rvtorch/selftest/
# The cross environment every build in this image inherits (dockcross style). QEMU_LD_PREFIX=/
# works because the multiarch libc6:<arch> puts the target's dynamic loader at its ABI path
# (/lib/ld-linux-*.so.1 through the merged /usr) and its libraries in /usr/lib/<triple>.
ENV RVTORCH_TARGET_ARCH=${TARGET_ARCH} \
    CROSS_TRIPLE=${CROSS_TRIPLE} \
    DEBIAN_ARCH=${DEBIAN_ARCH} \
    CC=${CROSS_TRIPLE}-gcc-${GCC_VERSION} \
    CXX=${CROSS_TRIPLE}-g++-${GCC_VERSION} \
    CPP=${CROSS_TRIPLE}-cpp-${GCC_VERSION} \
    AR=${CROSS_TRIPLE}-ar \
    NM=${CROSS_TRIPLE}-nm \
    RANLIB=${CROSS_TRIPLE}-ranlib \
    AS=${CROSS_TRIPLE}-as \
    LD=${CROSS_TRIPLE}-ld \
    STRIP=${CROSS_TRIPLE}-strip \
    OBJCOPY=${CROSS_TRIPLE}-objcopy \
    OBJDUMP=${CROSS_TRIPLE}-objdump \
    READELF=${CROSS_TRIPLE}-readelf \
    PKG_CONFIG=${CROSS_TRIPLE}-pkg-config \
    CMAKE_TOOLCHAIN_FILE=/opt/rvtorch/toolchains/${CROSS_TRIPLE}.cmake \
    CMAKE_GENERATOR=Ninja \
    QEMU_LD_PREFIX=/ \
    RVTORCH_CONAN_PROFILES=/opt/rvtorch/toolchains/conan
ARG RVTORCH_REVISION=unknown
ARG RVTORCH_CREATED=unknown
LABEL org.opencontainers.image.title="rvtorch toolchain" \
      org.opencontainers.image.revision="${RVTORCH_REVISION}" \
      org.opencontainers.image.created="${RVTORCH_CREATED}" \
      io.rvtorch.target-arch="${TARGET_ARCH}"
WORKDIR /work
