"""``rvtorch board up|status|down|ssh|install|validate``: virtual and real boards (docs/board.md).

    rvtorch board up --arch riscv64 [--cpu MODEL] [--smp N] [--mem 4G] [--timeout S]
    rvtorch board status|down --arch riscv64
    rvtorch board ssh --arch riscv64 -- CMD ...
    rvtorch board install --wheel FILE (--vm [--arch A] | --host USER@HOST [--port P] [--key K])
    rvtorch board validate (--vm | --host ...) [--wheel FILE] [--suite smoke,reflow,fl] --report D

Exit codes: 0 ok; 2 usage or an unusable board (unreachable, key refused, other arch, no
matching Python, old glibc, full disk); 4 a virtual board that crashed or hung while booting, or
a pip install that failed; 5 the installed torch does not work on the board.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UsageError
from ..targets import Target, matrix


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "board", help="a virtual board (qemu-system) or a real one over SSH: install, validate",
        description="Boot a Debian trixie virtual board in qemu-system, or reach a real board "
        "over SSH; install a wheel with pip into a venv there and validate it (docs/board.md).")
    bsub = p.add_subparsers(dest="board_command", metavar="ACTION")
    bsub.required = True

    u = bsub.add_parser("up", help="boot the virtual board (or reuse the running one)")
    u.add_argument("--arch", required=True, help="riscv64 or aarch64")
    u.add_argument("--cpu", help="CPU model from targets.toml (default: the first listed)")
    u.add_argument("--smp", type=int, help="virtual CPUs (default 2)")
    u.add_argument("--mem", help="memory, e.g. 4G (default 4G)")
    u.add_argument("--port", type=int, help="127.0.0.1 port forwarded to the board's sshd")
    u.add_argument("--timeout", type=float, default=900.0,
                   help="seconds to wait for an SSH login (default 900)")
    u.set_defaults(func=run_up)

    s = bsub.add_parser("status", help="is the virtual board running, and how to reach it")
    s.add_argument("--arch", required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_status)

    d = bsub.add_parser("down", help="power the virtual board off")
    d.add_argument("--arch", required=True)
    d.add_argument("--discard", action="store_true",
                   help="also drop its disk (the next up starts from the clean image)")
    d.set_defaults(func=run_down)

    h = bsub.add_parser("ssh", help="run a command on the virtual board")
    h.add_argument("--arch", required=True)
    h.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS... (none: a login shell)")
    h.set_defaults(func=run_ssh)

    i = bsub.add_parser("install", help="install a wheel with pip into a venv on a board")
    i.add_argument("--wheel", required=True, type=Path, help="the torch wheel")
    _board_args(i)
    i.add_argument("--venv", default="~/rvtorch-venv",
                   help="venv path on the board (default ~/rvtorch-venv)")
    i.set_defaults(func=run_install)

    v = bsub.add_parser("validate", help="run the validation suites on a board (exit 0/5)")
    _board_args(v)
    v.add_argument("--wheel", type=Path,
                   help="install this wheel first (default: use the venv already there)")
    v.add_argument("--venv", default="~/rvtorch-venv", help="venv on the board")
    v.add_argument("--suite", default="smoke",
                   help="comma list of suites: smoke, reflow, fl (default smoke)")
    v.add_argument("--report", required=True, type=Path, help="local directory for the report")
    v.set_defaults(func=run_validate)

    r = bsub.add_parser("references", help="compute (or reuse) the x86 references of the suites "
                        "only; CI copies them to a runner that has no x86")
    r.add_argument("--arch", required=True)
    r.add_argument("--suite", default="smoke", help="comma list of suites (default smoke)")
    r.set_defaults(func=run_references)


def _board_args(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--vm", action="store_true", help="the running virtual board")
    where.add_argument("--host", metavar="USER@HOST", help="a real board over SSH")
    p.add_argument("--arch", help="with --vm: the virtual board's arch (default: the wheel's)")
    p.add_argument("--port", type=int, help="with --host: SSH port (default 22)")
    p.add_argument("--key", type=Path, help="with --host: SSH private key")
    p.add_argument("--known-hosts", type=Path,
                   help="with --host: check the board's host key against this file only")


def _target(arch: str) -> Target:
    return matrix().target(arch)


def run_up(args: argparse.Namespace) -> int:
    from ..board.vm import BoardConfig, up

    t = _target(args.arch)
    cfg = BoardConfig.make(t, args.cpu, args.smp, args.mem)
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout}: give a positive number of seconds")
    board = up(t, cfg, timeout=args.timeout, port=args.port)
    how = "reused" if board.reused else f"booted in {board.boot_seconds:.0f} s"
    print(f"{t.arch} board {how}: cpu {cfg.cpu} ({cfg.qemu_cpu}), {cfg.smp} CPUs, "
          f"{cfg.mem_mib} MiB; ssh: rvtorch board ssh --arch {t.arch} -- CMD "
          f"(port {board.remote.port})")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from ..board.vm import status

    info = status(_target(args.arch))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    if not info["running"]:
        print(f"{args.arch} board: not running (console log {info['console']})")
        return 0
    ssh = "ok" if info.get("ssh_ok") else f"NOT reachable: {info.get('ssh_problem')}"
    print(f"{args.arch} board: running pid {info['pid']}, cpu {info['cpu']}, {info['smp']} CPUs, "
          f"{info['mem_mib']} MiB, up {info['uptime_s']:.0f} s, ssh port {info['port']} {ssh}")
    print(f"  {info['ssh']}")
    return 0


def run_down(args: argparse.Namespace) -> int:
    from ..board.vm import down

    was = down(_target(args.arch), discard=args.discard)
    print(f"{args.arch} board: " + ("powered off" if was else "was not running")
          + (", disk discarded" if args.discard else ""))
    return 0


def run_ssh(args: argparse.Namespace) -> int:
    import shlex
    import subprocess

    from ..board.vm import running_board

    board = running_board(_target(args.arch))
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    argv = board.remote.ssh_argv(shlex.join(cmd)) if cmd else board.remote.ssh_argv("")[:-1]
    if not cmd and sys.stdin.isatty():
        argv.insert(1, "-t")
    return subprocess.run(argv, check=False).returncode


def run_install(args: argparse.Namespace) -> int:
    from ..board.install import install, resolve_board

    board = resolve_board(vm=args.vm, host=args.host, arch=args.arch, port=args.port,
                          key=args.key, wheel=args.wheel, known_hosts=args.known_hosts)
    result = install(board, args.wheel, venv=args.venv)
    print(result.summary())
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from ..board.install import resolve_board
    from ..board.validate import arch_of_board, validate_on_board
    from ..errors import ValidationError
    from ..validation import parse_suites

    suites = parse_suites(args.suite)
    if "fastflow-fl" in suites:
        raise UsageError("--suite fastflow-fl runs under QEMU only (`rvtorch validate`)")
    board = resolve_board(vm=args.vm, host=args.host, arch=args.arch, port=args.port,
                          key=args.key, wheel=args.wheel, known_hosts=args.known_hosts)
    t = arch_of_board(board, args.wheel, args.arch)
    vm_cpu = None
    if args.vm:
        from ..board.vm import running_board

        vm_cpu = running_board(t).config.cpu
    report = validate_on_board(board, t, wheel=args.wheel, venv=args.venv, suites=suites,
                               report_dir=args.report, vm_cpu=vm_cpu)
    print(f"report: {args.report / 'report.html'}", file=sys.stderr)
    for run_ in report["runs"]:
        times = ", ".join(f"{s} {v['wall_s']:.0f} s" for s, v in run_["suites"].items())
        print(f"{t.arch} {run_['cpu']} on {board.label}: {times}")
    if not report["ok"]:
        first = report["failures"][0] if report["failures"] else (
            report["skipped"][0] if report.get("skipped") else "no checks ran")
        raise ValidationError(f"validation on {board.label}: {first}",
                              hint=f"see {args.report / 'report.html'}")
    print(f"validation passed on {board.label}: {report['checks_total']} checks")
    return 0


def run_references(args: argparse.Namespace) -> int:
    from ..validation import Options, ensure_references, host_env, parse_suites

    t = _target(args.arch)
    opts = Options(arch=t.arch, cpus=(), suites=parse_suites(args.suite), report=Path("."))
    refs = ensure_references(opts, host_env())
    for suite, d in refs.dirs.items():
        print(f"{suite}: {d}")
    return 0
