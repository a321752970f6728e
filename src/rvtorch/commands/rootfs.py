"""``rvtorch rootfs create|path|remove|list``: the target root filesystems (rvtorch.rootfs)."""

from __future__ import annotations

import argparse
import json

from ..cli import MIRROR, POSITIVE_INT
from ..emulate import all_arches, resolve
from ..errors import UsageError
from ..rootfs import (
    ensure_many,
    ensure_rootfs,
    is_complete,
    list_rootfs,
    remove_rootfs,
    rootfs_path,
)


def _arch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", required=True,
                   help="a targets.toml arch, or 'host' for the native reference rootfs")
    p.add_argument("--with-torch", action="store_true",
                   help="the rootfs with Debian's python3-torch, numpy and OpenBLAS")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("rootfs", help="Debian root filesystems to run target code under QEMU")
    rsub = p.add_subparsers(dest="rootfs_command", metavar="ACTION")
    rsub.required = True

    c = rsub.add_parser("create", help="create (or reuse) the rootfs; prints its path")
    c.add_argument("--arch", required=True, action="append",
                   help="a targets.toml arch, or 'host' (repeatable: built side by side)")
    c.add_argument("--with-torch", action="store_true",
                   help="the rootfs with Debian's python3-torch, numpy and OpenBLAS")
    c.add_argument("--jobs", type=POSITIVE_INT, default=3, help="rootfs built at once (default 3)")
    c.add_argument("--debian-mirror", type=MIRROR, metavar="URL",
                   help="Debian archive URL (default: $RVTORCH_DEBIAN_MIRROR, else host apt)")
    c.set_defaults(func=run_create)

    q = rsub.add_parser("path", help="print the rootfs path (exit 2 if it is not created)")
    _arch_args(q)
    q.set_defaults(func=run_path)

    r = rsub.add_parser("remove", help="delete the rootfs and its manifest")
    _arch_args(r)
    r.set_defaults(func=run_remove)

    ls = rsub.add_parser("list", help="list the cached root filesystems")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)


def run_create(args: argparse.Namespace) -> int:
    if len(args.arch) == 1:
        print(ensure_rootfs(args.arch[0], args.with_torch, mirror=args.debian_mirror))
        return 0
    specs = [(arch, args.with_torch) for arch in dict.fromkeys(args.arch)]
    for path in ensure_many(specs, jobs=args.jobs, mirror=args.debian_mirror).values():
        print(path)
    return 0


def run_path(args: argparse.Namespace) -> int:
    resolve(args.arch)
    path = rootfs_path(args.arch, args.with_torch, create_cache=False)
    if not is_complete(path, args.arch, args.with_torch):
        flag = " --with-torch" if args.with_torch else ""
        raise UsageError(f"no complete rootfs at {path}",
                         hint=f"run `rvtorch rootfs create --arch {args.arch}{flag}`")
    print(path)
    return 0


def run_remove(args: argparse.Namespace) -> int:
    resolve(args.arch)
    existed = remove_rootfs(args.arch, args.with_torch)
    print(("removed " if existed else "nothing at ")
          + str(rootfs_path(args.arch, args.with_torch)))
    return 0


def run_list(args: argparse.Namespace) -> int:
    items = list_rootfs()
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    if not items:
        print("no rootfs yet (arches: " + ", ".join(all_arches()) + ")")
    for i in items:
        state = "ok" if i["complete"] else "INCOMPLETE"
        print(f"{i['name']:<24} {state:<10} torch={i['torch'] or '-':<16} {i['path']}")
    return 0
