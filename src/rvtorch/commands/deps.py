"""``rvtorch deps``: native dependencies through the repo's Conan recipes (offline).

  rvtorch deps fetch [--only NAME]... [--source-mirror DIR]   fill the Conan download cache
  rvtorch deps build --arch A [--only NAME]...                 conan create + deploy in the image
  rvtorch deps show --arch A                                   what the torch build gets
  rvtorch deps home                                            the project's CONAN_HOME
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import conan, deps
from ..cli import DIR, FILE, MIRROR, OPENBLAS_VERSION
from ..errors import UsageError
from ..targets import matrix, target


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("deps", help="build native dependencies (OpenBLAS, FastFlow, libtorch) "
                       "with the repo's Conan recipes")
    dsub = p.add_subparsers(dest="deps_command", metavar="ACTION")
    dsub.required = True

    def common_sources(q: argparse.ArgumentParser) -> None:
        q.add_argument("--only", action="append", choices=deps.DEPS, metavar="NAME",
                       help=f"only this dependency (repeatable; {', '.join(deps.DEPS)}); "
                       f"default: {', '.join(deps.DEFAULT_DEPS)}")
        q.add_argument("--source-mirror", type=DIR, metavar="DIR",
                       help="directory holding source archives (named as in their URL or by "
                       "sha256), imported into the download cache after a sha256 check")
        q.add_argument("--debian-mirror", type=MIRROR, metavar="URL",
                       help="Debian archive to fetch orig tarballs from (default: "
                       "$RVTORCH_DEBIAN_MIRROR, then the host's apt sources)")
        q.add_argument("--openblas-version", type=OPENBLAS_VERSION,
                       default=deps.OPENBLAS_VERSION,
                       help=f"OpenBLAS recipe version (default {deps.OPENBLAS_VERSION}, Debian's "
                       "repack: the source every Debian mirror serves)")

    f = dsub.add_parser("fetch", help="put every source the chosen recipes need into the "
                        "project's Conan download cache (sha256-verified)")
    common_sources(f)
    f.add_argument("--offline", action="store_true",
                   help="never probe upstream URLs: a source not in the cache, the mirror "
                   "directory or the Debian archive is an error")
    f.set_defaults(func=run_fetch)

    b = dsub.add_parser("build", help="conan create (with test_package under QEMU) and deploy "
                        "to the cache for the torch build")
    b.add_argument("--arch", required=True, help="target arch (toolchains/targets.toml)")
    common_sources(b)
    b.add_argument("--openblas-target", metavar="TARGET",
                   help="build one OpenBLAS kernel set (no DYNAMIC_ARCH), e.g. ARMV8")
    b.add_argument("--openblas-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other openblas recipe option, e.g. threading=openmp or "
                   "precisions=sd (repeatable; see docs/recipes.md)")
    b.add_argument("--build-lapack", action=argparse.BooleanOptionalAction, default=True,
                   help="OpenBLAS with LAPACK (default; a +ds version takes the reference "
                   "routines from the target's liblapack_pic.a)")
    b.add_argument("--torch-wheel", type=FILE, metavar="WHL",
                   help="torch wheel whose C++ side the libtorch recipe packages")
    b.add_argument("--torch-from", choices=("debian",),
                   help="libtorch from Debian's libtorch-dev for the target instead of a wheel")
    b.add_argument("--no-test", action="store_true", help="skip the test_package runs")
    b.add_argument("--engine", help="container engine (default: detect; $RVTORCH_ENGINE)")
    b.set_defaults(func=run_build)

    s = dsub.add_parser("show", help="print what `deps build` left for the torch build")
    s.add_argument("--arch", required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_show)

    h = dsub.add_parser("home", help="print the project's CONAN_HOME (as a shell export)")
    h.set_defaults(func=run_home)


def _versions(args: argparse.Namespace) -> dict[str, str]:
    return {"openblas": args.openblas_version, "fastflow": deps.FASTFLOW_VERSION}


def run_fetch(args: argparse.Namespace) -> int:
    conan.setup_home()
    names = [n for n in (args.only or deps.DEFAULT_DEPS) if n != "libtorch"]
    versions = _versions(args)
    srcs = [conan.source_of(n, versions[n]) for n in names]
    conan.ensure_sources(srcs, mirror=args.debian_mirror, source_mirror=args.source_mirror,
                         probe=not args.offline)
    for src in srcs:
        where = conan.cached_source(src) if conan.have_source(src) else src.url
        print(f"{src.ref}: {src.filename} sha256 {src.sha256} -> {where}")
    return 0


def run_build(args: argparse.Namespace) -> int:
    t = target(args.arch)
    kw: dict[str, Any] = {}
    if not args.only or "openblas" in args.only:
        extra = {}
        for item in args.openblas_option:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UsageError(f"--openblas-option {item!r}: expected KEY=VALUE")
            extra[key] = value
        kw.update(version=args.openblas_version, static_target=args.openblas_target,
                  build_lapack=args.build_lapack, extra_options=extra)
    if args.only and "libtorch" in args.only:
        kw.update(torch_wheel=args.torch_wheel, torch_from=args.torch_from)
    meta = deps.build(t.arch, only=args.only, test=not args.no_test,
                      debian_mirror=args.debian_mirror, source_mirror=args.source_mirror,
                      engine_name=args.engine, **kw)
    _print(t.arch, meta)
    return 0


def _print(arch: str, meta: dict[str, object]) -> None:
    root = deps.deps_dir(arch)
    for name, entry in meta.items():
        print(f"{name}: {entry['ref']} -> {entry['prefix']}")  # type: ignore[index]
    env_file = root / "deps.env"
    if env_file.is_file() and env_file.read_text().strip():
        print(f"torch build environment ({env_file}):")
        sys.stdout.write("".join(f"  {ln}\n" for ln in env_file.read_text().splitlines()))


def run_show(args: argparse.Namespace) -> int:
    t = target(args.arch)
    meta_path = deps.deps_dir(t.arch) / "deps.json"
    if not meta_path.is_file():
        raise UsageError(f"no dependencies built for {t.arch}",
                         hint=f"run `rvtorch deps build --arch {t.arch}`")
    meta = json.loads(meta_path.read_text())
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        _print(t.arch, meta)
    return 0


def run_home(args: argparse.Namespace) -> int:
    home = conan.setup_home()
    print(f"export CONAN_HOME={home}")
    print(f"# remotes: {conan.REMOTE_NAME} -> {conan.recipes_dir()} (only); arches: "
          f"{', '.join(matrix().arches)}", file=sys.stderr)
    return 0
