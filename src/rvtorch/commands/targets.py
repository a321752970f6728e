"""``rvtorch targets [--json]``: print the target matrix."""

from __future__ import annotations

import argparse
import json

from ..targets import matrix


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("targets", help="print the target matrix (toolchains/targets.toml)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--arches", action="store_true", help="print only the arch names, one a line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    m = matrix()
    if args.arches:
        print("\n".join(m.arches))
        return 0
    if args.json:
        print(json.dumps(m.to_json(), indent=2))
        return 0
    p = m.project
    print(f"suite {p.suite}, gcc {p.gcc}, python {p.python}, image {p.image}")
    for t in m.targets:
        print(f"\n{t.arch}  ({t.description})")
        print(f"  triple {t.triple}  {t.cflags}  debian {t.debian_arch}  conan {t.conan_arch}")
        print(f"  qemu {t.qemu_binary}  wheel {t.wheel_platform}")
        print(f"  openblas {', '.join(t.openblas_targets)}")
        for c in t.cpu:
            v = "vector" if c.vector else "scalar"
            print(f"  cpu {c.name:<12} -cpu {c.qemu_cpu:<40} {v:<7} expects {c.openblas_core}")
    return 0
