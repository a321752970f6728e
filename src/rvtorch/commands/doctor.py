"""``rvtorch doctor``: report the engine, binfmt, QEMU, debootstrap, cache and rootfs state."""

from __future__ import annotations

import argparse
import json

from ..doctor import findings


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "doctor",
        help="check this machine; each gap with the command that fixes it",
        description="Exit 0 when everything required is there, 2 when something is missing.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    found = findings()
    missing = [f for f in found if f.status == "missing"]
    if args.json:
        print(json.dumps({"ok": not missing, "findings": [f.to_json() for f in found]},
                         indent=2))
    else:
        for f in found:
            mark = {"ok": "ok", "warn": "WARN", "missing": "MISSING"}[f.status]
            line = f"{mark:<8} {f.area:<28} {f.detail}"
            if f.fix:
                line += f"\n{'':<8} {'':<28} fix: {f.fix}"
            print(line)
        print(f"\n{len(missing)} required item(s) missing" if missing else "\nall required ok")
    return 2 if missing else 0
