"""``rvtorch build``: cross-build a PyTorch wheel for a target inside the toolchain image."""

from __future__ import annotations

import argparse
import json
import sys

from ..build import CACHES, OPENBLAS_CHOICES, STAGES, make_plan, resolve_features, run_build
from ..cli import MIRROR, OUT_DIR, POSITIVE_INT, TORCH_VERSION
from ..errors import UsageError
from ..sources import SOURCE_CHOICES, resolve_provider
from ..targets import matrix
from ..torchspec import torch_version


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("build", help="cross-build a PyTorch wheel, validate it under QEMU, "
                       "publish it into dist/")
    p.add_argument("--arch", required=True, help="target arch of toolchains/targets.toml")
    p.add_argument("--torch-version", type=TORCH_VERSION, default=None,
                   help="default: newest in toolchains/torch.toml")
    p.add_argument(
        "--source",
        choices=SOURCE_CHOICES,
        default="auto",
        help="upstream git tag, Debian dfsg source, or auto (upstream if reachable)",
    )
    p.add_argument(
        "--jobs",
        type=POSITIVE_INT,
        default=None,
        help="parallel compile jobs (default: cores, at most one per 3 GiB of memory)",
    )
    p.add_argument("--out", type=OUT_DIR, default=None,
                   help="wheel directory (default: dist/); checked writable before anything runs")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the fully resolved plan as JSON and do nothing else",
    )
    p.add_argument(
        "--cache", choices=CACHES, default="ccache", help="compiler cache (default ccache)"
    )
    p.add_argument(
        "--stage",
        choices=STAGES,
        default="full",
        help="configure only, a partial build of --target, or the full wheel",
    )
    p.add_argument(
        "--target",
        dest="targets",
        action="append",
        default=[],
        help="ninja target for --stage partial (repeatable; default: c10 + ATen kernels)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a build flag/environment variable (wins over torch.toml)",
    )
    p.add_argument(
        "--openblas",
        choices=OPENBLAS_CHOICES,
        default="sysroot",
        help="sysroot: Debian's libopenblas-dev in the image (default); recipe: recipes/openblas "
        "as `rvtorch deps build` makes it (built first when missing or built otherwise); "
        "deployed: what `rvtorch deps build` last deployed, never built here",
    )
    p.add_argument("--aten-rvv", choices=("on", "off"), default=None,
                   help="riscv64: apply the aten-rvv patches (ATen's RVV CPU capability, chosen "
                   "at run time) and build with USE_RVV=1 (default: on for riscv64, off "
                   "elsewhere; docs/aten-rvv.md)")
    p.add_argument("--debian-mirror", type=MIRROR, default=None,
                   help="Debian archive URL for the debian source")
    p.add_argument("--engine", default=None, help="container engine (docker, podman, buildah)")
    p.add_argument("--no-validate", action="store_true",
                   help="publish the wheel without validating it under QEMU (a warning; "
                   "build-info records it)")
    p.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    matrix().target(args.arch)  # unknown arch: exit 2 before anything else
    tv = torch_version(args.torch_version)
    overrides = parse_overrides(args.overrides)
    # auto probes the upstream git server (a few seconds), also for --dry-run: the plan shows
    # the provider a real run would use. The notice goes to stderr; stdout stays pure JSON.
    provider = resolve_provider(args.source, tv)
    plan = make_plan(
        args.arch,
        version=tv.version,
        provider=provider,
        jobs=args.jobs,
        out=args.out,
        cache=args.cache,
        stage=args.stage,
        targets=args.targets,
        overrides=overrides,
        openblas=args.openblas,
        features=resolve_features(args.arch, {"aten-rvv": args.aten_rvv}),
    )
    if args.dry_run:
        print(json.dumps(plan.to_json(), indent=2))
        return 0
    for note in plan.notes:
        print(f"rvtorch: note: {note}", file=sys.stderr)
    info = run_build(
        plan,
        provider=provider,
        mirror=args.debian_mirror,
        engine_name=args.engine,
        validate=not args.no_validate,
    )
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in info["steps"].items())
    print(f"rvtorch: {plan.stage} build for {plan.arch} ok ({steps})", file=sys.stderr)
    if "published" in info:
        print(info["published"])
    return 0
