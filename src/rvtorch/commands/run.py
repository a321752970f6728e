"""``rvtorch run --arch A [--cpu MODEL] [--rootfs-torch] -- CMD ...``: run CMD under QEMU."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ..cli import DIR
from ..emulate import cpu_model, run_guest
from ..errors import UsageError
from ..rootfs import ensure_rootfs


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="run a command in the target rootfs under QEMU (clean guest environment)",
        description="Runs CMD in the arch's Debian rootfs (created on first use) and exits "
        "with CMD's exit status. Only PATH, HOME, LANG, TMPDIR and --env values reach the guest.",
    )
    p.add_argument("--arch", required=True, help="targets.toml arch, or 'host'")
    p.add_argument("--cpu", help="CPU model name from targets.toml (default: the first listed)")
    p.add_argument("--rootfs-torch", action="store_true",
                   help="use the rootfs with Debian's python3-torch")
    p.add_argument("--rootfs", type=DIR, help="use this rootfs directory instead of the cached one")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="pass a variable to the guest (repeatable)")
    p.add_argument("--cwd", help="guest working directory")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UsageError("no command given", hint="rvtorch run --arch ARCH -- CMD ...")
    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--env {item!r} is not NAME=VALUE")
        env[name] = value
    cpu_model(args.arch, args.cpu)  # unknown arch/CPU: fail before creating anything
    rootfs = Path(args.rootfs) if args.rootfs else ensure_rootfs(args.arch, args.rootfs_torch)
    proc = run_guest(args.arch, cmd, cpu=args.cpu, rootfs=rootfs, env=env, capture=False,
                     cwd=args.cwd)
    if proc.returncode < 0:
        sig = -proc.returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        print(f"rvtorch: guest killed by signal {name}", file=sys.stderr)
        return 128 + sig
    return proc.returncode
