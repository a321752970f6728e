"""``rvtorch check-wheel FILE [--arch A] [--json] [--build-path DIR]``: the wheel gate.

Exit 0 when every check passes, 4 (build error) when the wheel fails one — a wheel that fails
its checks is a defect of the build that made it — with one line naming the first finding on
stderr and all of them on stdout. A damaged or crafted file (not a zip, bad CRC, members
outside the install directory, broken RECORD/METADATA/ELF) is a failed check too, never a
traceback. A missing file or an unknown arch is a usage error (2). The checks: docs/wheel.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import BuildError
from ..targets import matrix
from ..wheel import check_wheel
from ..wheelcheck import printable


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "check-wheel",
        help="validate a wheel: zip and member paths, RECORD, METADATA, ELF files "
             "(machine, SOABI, RPATHs, bundled libs), build paths",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("wheel", type=Path, metavar="FILE", help="the .whl file")
    p.add_argument("--arch", choices=matrix().arches,
                   help="target arch (default: the one the wheel's platform tag names)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--build-path", action="append", default=[], metavar="DIR",
                   help="a build/source directory no file in the wheel may mention (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = check_wheel(args.wheel, args.arch, build_paths=args.build_path)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.summary())
    if not report.ok:
        raise BuildError(f"{printable(report.wheel)} fails {len(report.findings)} check(s): "
                         f"{report.findings[0]}")
    return 0
