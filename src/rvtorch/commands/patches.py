"""``rvtorch patches list|check|apply``: the torch patch series (patches/torch/<version>/)."""

from __future__ import annotations

import argparse
import sys

from ..cli import DIR, MIRROR, TORCH_VERSION
from ..patches import apply_in_place, apply_series, load_series, series_for
from ..sources import SOURCE_CHOICES, resolve_provider, scratch, unpack_into
from ..torchspec import torch_version


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("patches", help="list, check or apply the torch patch series")
    psub = p.add_subparsers(dest="patches_command", metavar="ACTION")
    psub.required = True
    for name, helptext, func in (
        ("list", "print the series with each patch's why and upstream status", run_list),
        (
            "check",
            "apply the series to a fresh copy of the real source (nothing is kept)",
            run_check,
        ),
        ("apply", "apply the series to an existing tree, all or nothing", run_apply),
    ):
        s = psub.add_parser(name, help=helptext)
        s.add_argument("--torch-version", type=TORCH_VERSION, default=None)
        s.add_argument(
            "--source",
            choices=SOURCE_CHOICES,
            default="auto",
            help="source provider whose patches to use (default auto)",
        )
        s.add_argument(
            "--patch-dir",
            type=DIR,
            default=None,
            help="a different series directory (default: the version's in torch.toml)",
        )
        if name == "check":
            s.add_argument("--debian-mirror", type=MIRROR, default=None)
        if name == "apply":
            s.add_argument("tree", type=DIR, help="the source tree to patch")
        s.set_defaults(func=func)


def _series(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    tv = torch_version(args.torch_version)
    series = load_series(args.patch_dir.resolve()) if args.patch_dir else series_for(tv)
    return tv, series


def run_list(args: argparse.Namespace) -> int:
    _, series = _series(args)
    for p in series.patches + series.optional:
        group = f"optional ({p.feature}); " if p.feature else ""
        print(
            f"{p.file}\n    {group}{p.type}; {', '.join(p.providers)}; upstream: {p.upstream}\n"
            f"    {p.why}"
        )
    return 0


def run_check(args: argparse.Namespace) -> int:
    tv, series = _series(args)
    provider = resolve_provider(args.source, tv)
    patches = series.for_provider(provider)
    # The optional groups too, on top of the default series (the way a build applies them).
    optional = series.for_provider(provider, series.features())[len(patches):]
    # A staging directory under the cache: removed here, or by a later run if this one is killed.
    with scratch("patches-check") as tmp:
        unpack_into(tv, provider, tmp, mirror=getattr(args, "debian_mirror", None))
        apply_in_place(patches, tmp)
        apply_in_place(optional, tmp)
    print(
        f"ok: {len(patches)} patches of {series.directory.name} apply to the {provider} "
        f"source of torch {tv.version}"
        + (f", and {len(optional)} optional ({', '.join(series.features())}) on top"
           if optional else ""),
        file=sys.stderr,
    )
    return 0


def run_apply(args: argparse.Namespace) -> int:
    tv, series = _series(args)
    provider = resolve_provider(args.source, tv)
    patches = series.for_provider(provider)
    apply_series(patches, args.tree.resolve())
    print(f"ok: applied {len(patches)} patches to {args.tree}", file=sys.stderr)
    return 0
