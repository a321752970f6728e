"""The one way to reach a board, virtual or real: OpenSSH's ``ssh`` and ``scp`` clients.

OpenSSH rather than a Python SSH library: it is on every host and every board, it reads the
user's own ``~/.ssh/config`` and agent for real boards, and what we run is what a user can run
by hand (each command is echoed as ``+ ssh ...``).

Every call runs with ``BatchMode=yes``: a missing key or an unknown host fails at once instead
of prompting. Connection failures become one-line usage errors (exit 2) that name the cause:
unreachable host, refused port, rejected key, changed host key. One kind is retried first: a
connection that timed out before any command ran (a busy board, such as an emulated one on a
loaded host, or a network hiccup), up to ``CONNECT_ATTEMPTS`` times.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..proc import echo, which

SSH_HINT = "apt-get install openssh-client"
# ssh's own exit status for "could not connect or authenticate" (the remote command's otherwise).
SSH_FAILED = 255

_CAUSES = (
    (re.compile(r"Permission denied \(", re.I), "the board refused the key"),
    (re.compile(r"Connection refused", re.I), "connection refused (is sshd running?)"),
    (re.compile(r"Could not resolve hostname", re.I), "unknown host name"),
    (re.compile(r"No route to host|Network is unreachable", re.I), "host unreachable"),
    (re.compile(r"timed out", re.I), "connection timed out (host unreachable?)"),
    (re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed", re.I),
     "host key verification failed"),
    (re.compile(r"Identity file .* not accessible|no such identity", re.I), "key file not found"),
    (re.compile(r"Connection closed|Connection reset|kex_exchange_identification", re.I),
     "connection closed by the board (still booting?)"),
)


# ssh's words for a connection that timed out while connecting or before the banner: no command
# ran on the board, so running the same command again is safe. Refusals, rejected keys and
# connections closed mid-command are never retried.
_CONNECT_TIMED_OUT = re.compile(r"Connection timed out|timed out during banner exchange", re.I)
CONNECT_ATTEMPTS = 3


def connect_timed_out(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode == SSH_FAILED and bool(_CONNECT_TIMED_OUT.search(proc.stderr or ""))


def connection_problem(stderr: str) -> str:
    """A short cause for an ssh failure (exit 255) from its stderr."""
    for pattern, cause in _CAUSES:
        if pattern.search(stderr):
            return cause
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "ssh failed"


@dataclass(frozen=True, kw_only=True)
class Remote:
    """``user@host:port`` with an optional key and known_hosts file (a virtual board has both)."""

    user: str
    host: str
    port: int = 22
    key: Path | None = None
    known_hosts: Path | None = None
    connect_timeout: int = 10
    extra_options: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, spec: str, *, port: int | None = None, key: Path | None = None) -> Remote:
        """``USER@HOST`` (``--host``); the user is required: a board's root rarely has a key."""
        user, sep, host = spec.rpartition("@")
        if not sep or not user or not host or any(c in spec for c in " /:"):
            raise UsageError(f"--host {spec!r} is not USER@HOST",
                             hint="e.g. --host debian@bpi-f3.local")
        if key is not None and not key.is_file():
            raise UsageError(f"key file {key} not found")
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"--port {port} is not a TCP port")
        return cls(user=user, host=host, port=port or 22, key=key)

    @property
    def name(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=8",
                "-o", "LogLevel=ERROR"]
        if self.key is not None:
            opts += ["-i", str(self.key), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts is not None:
            # The virtual board's host key is known from its image: check it strictly.
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}",
                     "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null"]
        else:
            # A real board: the user's known_hosts; a first contact is recorded, a changed
            # key still fails.
            opts += ["-o", "StrictHostKeyChecking=accept-new"]
        return opts + list(self.extra_options)

    def ssh_argv(self, command: str) -> list[str]:
        return [which("ssh", hint=SSH_HINT), *self.options(), "-p", str(self.port),
                f"{self.user}@{self.host}", command]

    def run(self, command: str, *, check: bool = True, timeout: float | None = None,
            input: str | None = None, capture: bool = True, quiet: bool = False,
            what: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a shell ``command`` on the board. Connection failures are always errors."""
        argv = self.ssh_argv(command)
        if not quiet:
            echo(argv)
        try:
            proc = self._attempts(argv, input=input, capture=capture, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise UsageError(f"{what or 'ssh command'} on {self.name} did not finish within "
                             f"{timeout:.0f} s") from exc
        if proc.returncode == SSH_FAILED and capture and _is_connection_error(proc.stderr):
            raise UsageError(f"cannot log in to {self.name}: {connection_problem(proc.stderr)}",
                             hint=self._hint(proc.stderr))
        if check and proc.returncode != 0:
            tail = (proc.stderr or "").strip().splitlines()[-1:] if capture else []
            raise UsageError(f"{what or shlex.quote(command[:60])} failed on {self.name} "
                             f"(exit {proc.returncode})" + (f": {tail[0][:200]}" if tail else ""))
        return proc

    def _attempts(self, argv: list[str], *, input: str | None = None, capture: bool = True,
                  timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` (ssh or scp); again, after a pause, while the connection timed out
        before any command ran (only detectable with the output captured)."""
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            proc = subprocess.run(argv, text=True, input=input, capture_output=capture,
                                  timeout=timeout, check=False)
            if not capture or not connect_timed_out(proc) or attempt == CONNECT_ATTEMPTS:
                return proc
            print(f"rvtorch: {self.name}: connection timed out, trying again "
                  f"({attempt + 1}/{CONNECT_ATTEMPTS})", file=sys.stderr)
            time.sleep(2.0 * attempt)
        raise AssertionError("unreachable")

    def reachable(self, timeout: float = 20) -> tuple[bool, str]:
        """(True, "") if ``true`` runs on the board, else (False, the cause)."""
        argv = self.ssh_argv("true")
        try:
            proc = subprocess.run(argv, text=True, capture_output=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            return False, "ssh timed out"
        if proc.returncode == 0:
            return True, ""
        return False, connection_problem(proc.stderr)

    def copy_to(self, sources: list[Path], dest: str, *, timeout: float | None = None) -> None:
        """scp files to ``dest`` (a directory on the board)."""
        scp = which("scp", hint=SSH_HINT)
        argv = [scp, "-q", *self.options(), "-P", str(self.port), *map(str, sources),
                f"{self.user}@{self.host}:{dest}/"]
        self._scp(argv, "copy to the board", timeout)

    def copy_from(self, source: str, dest: Path, *, timeout: float | None = None) -> None:
        """scp a file or directory (recursively) from the board into ``dest``."""
        scp = which("scp", hint=SSH_HINT)
        argv = [scp, "-q", "-r", *self.options(), "-P", str(self.port),
                f"{self.user}@{self.host}:{source}", str(dest)]
        self._scp(argv, "copy from the board", timeout)

    def _scp(self, argv: list[str], what: str, timeout: float | None) -> None:
        echo(argv)
        try:
            proc = self._attempts(argv, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise UsageError(f"{what} ({self.name}) did not finish in {timeout:.0f} s") from exc
        if proc.returncode != 0:
            if _is_connection_error(proc.stderr):
                raise UsageError(f"cannot log in to {self.name}: "
                                 f"{connection_problem(proc.stderr)}",
                                 hint=self._hint(proc.stderr))
            cause = connection_problem(proc.stderr)
            if "No space left" in proc.stderr:
                cause = "no space left on the board's disk"
            raise UsageError(f"{what} ({self.name}) failed: {cause}")

    def _hint(self, stderr: str) -> str:
        if re.search(r"Permission denied", stderr):
            return "check --key and the board's ~/.ssh/authorized_keys (docs/board.md)"
        if re.search(r"host key", stderr, re.I):
            return f"the board's host key changed: ssh-keygen -R '[{self.host}]:{self.port}'"
        return f"check that the board is up and sshd listens on port {self.port}"


def _is_connection_error(stderr: str | None) -> bool:
    if not stderr:
        return True
    return any(p.search(stderr) for p, _ in _CAUSES) or stderr.lstrip().startswith("ssh:")
