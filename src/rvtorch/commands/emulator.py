"""``rvtorch emulator setup|teardown|status``: binfmt_misc registration of qemu-user."""

from __future__ import annotations

import argparse

from ..emulate import BINFMT_DIR, binfmt_mounted, binfmt_state, resolve, setup, teardown
from ..targets import matrix


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("emulator", help="register/remove qemu-user in binfmt_misc (root)")
    esub = p.add_subparsers(dest="emulator_command", metavar="ACTION")
    esub.required = True
    s = esub.add_parser("setup", help="register qemu-<arch>-static with the F flag (root only)")
    s.add_argument("--arch", action="append", help="target arch (repeatable; default: all)")
    s.set_defaults(func=run_setup)
    t = esub.add_parser("teardown", help="remove the entries `setup` registered, only those")
    t.add_argument("--arch", action="append", help="target arch (repeatable; default: all)")
    t.set_defaults(func=run_teardown)
    st = esub.add_parser("status", help="show the binfmt state per target")
    st.set_defaults(func=run_status)


def _arches(given: list[str] | None) -> list[str]:
    arches = given or list(matrix().arches)
    for a in arches:
        resolve(a)
    return arches


def run_setup(args: argparse.Namespace) -> int:
    setup(_arches(args.arch))
    return 0


def run_teardown(args: argparse.Namespace) -> int:
    removed = teardown(_arches(args.arch) if args.arch else None)
    print("removed " + ", ".join(removed) if removed else "nothing registered by rvtorch")
    return 0


def run_status(args: argparse.Namespace) -> int:
    if not binfmt_mounted():
        print(f"binfmt_misc not mounted at {BINFMT_DIR}")
    for t in matrix().targets:
        print(f"{t.arch}: {binfmt_state(t).describe()}")
    return 0
