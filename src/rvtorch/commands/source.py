"""``rvtorch source fetch|unpack``: download (sha256-pinned, resumable), unpack PyTorch sources."""

from __future__ import annotations

import argparse
import json

from ..cli import MIRROR, OUT_DIR, TORCH_VERSION
from ..sources import SOURCE_CHOICES, fetch, resolve_provider, unpack
from ..torchspec import torch_version


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--torch-version", type=TORCH_VERSION, default=None,
        help="torch version (default: newest in torch.toml)",
    )
    p.add_argument(
        "--source",
        choices=SOURCE_CHOICES,
        default="auto",
        help="source provider (default auto: upstream when reachable, else debian)",
    )
    p.add_argument(
        "--debian-mirror",
        type=MIRROR,
        default=None,
        help="Debian archive URL (default: $RVTORCH_DEBIAN_MIRROR, then apt's configuration)",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("source", help="fetch or unpack the PyTorch source (toolchains/torch.toml)")
    ssub = p.add_subparsers(dest="source_command", metavar="ACTION")
    ssub.required = True
    f = ssub.add_parser("fetch", help="download and verify the source files into the cache")
    _common(f)
    f.set_defaults(func=run_fetch)
    u = ssub.add_parser("unpack", help="unpack a pristine (unpatched) tree into DEST atomically")
    _common(u)
    u.add_argument("dest", type=OUT_DIR, help="directory to create (replaced if it exists)")
    u.set_defaults(func=run_unpack)


def run_fetch(args: argparse.Namespace) -> int:
    tv = torch_version(args.torch_version)
    provider = resolve_provider(args.source, tv)
    print(json.dumps(fetch(tv, provider, mirror=args.debian_mirror), indent=2))
    return 0


def run_unpack(args: argparse.Namespace) -> int:
    tv = torch_version(args.torch_version)
    provider = resolve_provider(args.source, tv)
    dest = unpack(tv, provider, args.dest.resolve(), mirror=args.debian_mirror)
    print(dest)
    return 0
