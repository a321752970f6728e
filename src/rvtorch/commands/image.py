"""``rvtorch image {base,build,ensure,test,toolchains,ref}``: the toolchain image."""

from __future__ import annotations

import argparse

from .. import image, toolchain
from ..cli import MIRROR
from ..engine import ENGINES, detect_engine
from ..targets import matrix


def _add_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="container engine (default: $RVTORCH_ENGINE, else the first of "
                        "docker, podman, buildah that works here)")


def _add_arch(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--arch", required=required, default=None,
                   help="target arch of toolchains/targets.toml" +
                        ("" if required else " (default: every target)"))


def _add_mirror(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debian-mirror", type=MIRROR, default=None, metavar="URL",
                   help="Debian archive for debootstrap and the image's apt (default: "
                        "$RVTORCH_DEBIAN_MIRROR, else the Debian mirror of this machine's apt)")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("image", help="the toolchain image: base, build, test, ensure")
    isub = p.add_subparsers(dest="image_command", metavar="ACTION")
    isub.required = True

    b = isub.add_parser("base", help="make the Debian base image (offline debootstrap, or --pull)")
    _add_engine(b)
    _add_mirror(b)
    b.add_argument("--pull", action="store_true",
                   help="pull the pinned digest (targets.toml project.base_image_pull) from a "
                        "registry instead of bootstrapping offline")
    b.add_argument("--rebuild", action="store_true", help="make it again even if it exists")
    b.set_defaults(func=run_base)

    for name, helptext in (
        ("build", "build the toolchain image of a target (reuses a tested image of the same "
                  "content hash unless --no-cache/--force) and self-test it"),
        ("ensure", "make sure tested toolchain images exist (build what is missing); print refs"),
    ):
        q = isub.add_parser(name, help=helptext)
        _add_arch(q, required=False)
        _add_engine(q)
        _add_mirror(q)
        q.add_argument("--pull-base", action="store_true",
                       help="pull the base image from a registry if it is missing")
        if name == "build":
            q.add_argument("--no-cache", action="store_true",
                           help="rebuild every layer (implies --force)")
            q.add_argument("--force", action="store_true",
                           help="rebuild even if a tested image with this content hash exists")
        q.set_defaults(func=run_build)

    t = isub.add_parser("test", help="run the self-test in a target's image (every CPU model)")
    _add_arch(t, required=False)
    _add_engine(t)
    t.add_argument("--image", default=None, help="image to test (default: the tested tag of the "
                                                  "current content hash, built if missing)")
    t.set_defaults(func=run_test)

    pr = isub.add_parser("prune", help="remove toolchain image tags of superseded content "
                                        "hashes (and failed self-tests)")
    _add_engine(pr)
    pr.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    pr.set_defaults(func=run_prune)

    tc = isub.add_parser("toolchains", help="rewrite toolchains/*.cmake and toolchains/conan/* "
                                            "from targets.toml")
    tc.add_argument("--check", action="store_true",
                    help="only check that they are up to date (exit 2 if not)")
    tc.set_defaults(func=run_toolchains)


def _arches(arch: str | None) -> list[str]:
    m = matrix()
    if arch:
        return [m.target(arch).arch]
    return list(m.arches)


def run_base(args: argparse.Namespace) -> int:
    eng = detect_engine(args.engine)
    ref = image.ensure_base(eng, pull=args.pull, mirror=args.debian_mirror, rebuild=args.rebuild)
    print(ref)
    return 0


def run_build(args: argparse.Namespace) -> int:
    arches = _arches(args.arch)
    eng = detect_engine(args.engine)
    for arch in arches:
        ref = image.build_image(
            arch,
            engine=eng,
            no_cache=getattr(args, "no_cache", False),
            force=getattr(args, "force", False),
            mirror=args.debian_mirror,
            pull_base=args.pull_base,
        )
        print(ref)
    return 0


def run_test(args: argparse.Namespace) -> int:
    arches = _arches(args.arch)
    eng = detect_engine(args.engine)
    if args.image and len(arches) != 1:
        from ..errors import UsageError

        raise UsageError("--image needs --arch")
    for arch in arches:
        ref = args.image or image.ensure_image(arch, engine=eng)
        for r in image.self_test(ref, arch, engine=eng):
            print(f"{r.arch} {r.cpu}: {r.line}")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    eng = detect_engine(args.engine, need_run=False)
    for ref in image.prune(eng, dry_run=args.dry_run):
        print(("would remove " if args.dry_run else "removed ") + ref)
    return 0


def run_toolchains(args: argparse.Namespace) -> int:
    if args.check:
        toolchain.check_files()
        print("toolchain files are up to date")
        return 0
    for rel in toolchain.write_files():
        print(f"wrote {rel}")
    return 0
