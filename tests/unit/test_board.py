"""rvtorch board: the parts that need no QEMU (checks, probes, SSH errors, the venv swap)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rvtorch.board import install as inst
from rvtorch.board import vm
from rvtorch.board.image import BoardImage, QemuTree
from rvtorch.board.remote import Remote, connection_problem
from rvtorch.errors import BuildError, UsageError
from rvtorch.targets import matrix
from tests.conftest import run_cli
from tests.wheelkit import make_wheel

RV = matrix().target("riscv64")
ARM = matrix().target("aarch64")

GOOD_PROBE = """machine=riscv64
kernel=6.12.57+deb13-riscv64
glibc=glibc 2.41
home=/home/rvtorch
python=/usr/bin/python3.13:3.13:yes
python=/usr/bin/python3:3.13:yes
free_kib=5000000
free_dir=/home/rvtorch
"""


def wheel(tmp_path: Path, tag: str = "cp313-cp313-manylinux_2_39_riscv64") -> Path:
    return make_wheel(tmp_path, {"torch/__init__.py": "x = 1\n" * 1000}, tag=tag)


def needs(tmp_path: Path, tag: str = "cp313-cp313-manylinux_2_39_riscv64") -> inst.WheelNeeds:
    return inst.WheelNeeds.read(wheel(tmp_path, tag))


def test_wheel_needs_from_tags(tmp_path: Path) -> None:
    n = needs(tmp_path)
    assert (n.arch, n.python, n.glibc) == ("riscv64", "3.13", (2, 39))
    assert n.unpacked_bytes >= 6000
    n = inst.WheelNeeds.read(wheel(tmp_path / "a", "cp313-cp313-linux_aarch64"))
    assert (n.arch, n.glibc) == ("aarch64", None)


def test_a_good_board_passes(tmp_path: Path) -> None:
    probe = inst.BoardProbe.parse(GOOD_PROBE)
    n = needs(tmp_path)
    inst.check_board(probe, n, "b", 100 << 20)
    assert inst.pick_python(probe, n, "b") == "/usr/bin/python3.13"


@pytest.mark.parametrize(("change", "message"), [
    ("machine=aarch64", "is aarch64, torch-2.6.0+riscv64"),
    ("glibc=glibc 2.36", "has glibc 2.36, torch"),
    ("free_kib=1000", "only 0 MiB free in /home/rvtorch"),
])
def test_incompatible_boards_are_refused(tmp_path: Path, change: str, message: str) -> None:
    key = change.split("=")[0]
    text = "\n".join(change if line.startswith(key + "=") else line
                     for line in GOOD_PROBE.splitlines())
    with pytest.raises(UsageError, match=message.replace("+", r"\+")) as err:
        inst.check_board(inst.BoardProbe.parse(text), needs(tmp_path), "b", 0)
    assert err.value.exit_code == 2


def test_no_matching_python(tmp_path: Path) -> None:
    probe = inst.BoardProbe.parse(GOOD_PROBE.replace(":3.13:", ":3.12:"))
    with pytest.raises(UsageError, match=r"no Python 3.13 .*found: 3.12"):
        inst.pick_python(probe, needs(tmp_path), "b")
    probe = inst.BoardProbe.parse(GOOD_PROBE.replace(":yes", ":no"))
    with pytest.raises(UsageError, match="venv module does not work"):
        inst.pick_python(probe, needs(tmp_path), "b")


def test_cpu_notes_name_thead_and_missing_v() -> None:
    thead = {"machine": "riscv64", "mvendorid": "0x5b7", "vector": False,
             "isa": "rv64imafdc_xtheadvector"}
    notes = inst.cpu_notes(thead)
    assert any("RVV 0.7.1" in n for n in notes)
    assert inst.cpu_notes({"machine": "riscv64", "mvendorid": "0x0", "vector": True}) == []


def test_probe_script_runs_in_a_real_shell(tmp_path: Path) -> None:
    out = subprocess.run(["sh", "-s", "--", str(tmp_path / "no/such/venv")], input=inst.PROBE_SH,
                         capture_output=True, text=True, check=True).stdout
    probe = inst.BoardProbe.parse(out)
    assert probe.machine == os.uname().machine
    assert probe.free_dir == str(tmp_path)
    assert probe.free_bytes and probe.free_bytes > 0
    assert probe.glibc is not None and probe.glibc >= (2, 17)


def test_target_probe_reports_this_cpu() -> None:
    script = Path(inst.__file__).with_name("probe_target.py").read_text()
    out = subprocess.run([sys.executable, "-"], input=script, capture_output=True,
                         text=True, check=True).stdout
    data = json.loads(out)
    assert data["cpu"]["machine"] == os.uname().machine
    assert data["python"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}")
    assert "torch" not in data  # only with --torch (the install's report)


def test_venv_is_swapped_in_with_its_paths_fixed(tmp_path: Path) -> None:
    final = tmp_path / "venv"
    tmp = tmp_path / "venv.tmp-1"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp)], check=True)
    (tmp / "bin/tool").write_text(f"#!{tmp}/bin/python3\nprint('ok')\n")
    (tmp / "bin/tool").chmod(0o755)
    final.mkdir()
    (final / "old").write_text("old venv")
    subprocess.run(["sh", "-c", inst._relocate_script(str(tmp), str(final))], check=True)
    assert not tmp.exists() and not (final / "old").exists()
    assert not list(tmp_path.glob("venv.old"))
    assert subprocess.run([str(final / "bin/tool")], capture_output=True, text=True,
                          check=True).stdout == "ok\n"
    assert str(tmp) not in (final / "bin/activate").read_text()


def test_remote_spec_errors(tmp_path: Path) -> None:
    for bad in ("bpi-f3", "@host", "user@", "user@host:22"):
        with pytest.raises(UsageError, match="is not USER@HOST"):
            Remote.parse(bad)
    with pytest.raises(UsageError, match="key file"):
        Remote.parse("u@h", key=tmp_path / "nokey")
    r = Remote.parse("debian@board", port=2222)
    assert (r.user, r.host, r.port) == ("debian", "board", 2222)


@pytest.mark.parametrize(("stderr", "cause"), [
    ("debian@h: Permission denied (publickey).", "refused the key"),
    ("ssh: connect to host 10.0.0.9 port 22: No route to host", "unreachable"),
    ("ssh: connect to host h port 22: Connection timed out", "timed out"),
    ("ssh: Could not resolve hostname nope: Name or service not known", "unknown host"),
    ("Host key verification failed.", "host key"),
])
def test_connection_problem(stderr: str, cause: str) -> None:
    assert cause in connection_problem(stderr)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_board_is_one_line_exit_2(tmp_path: Path) -> None:
    if not Path("/usr/bin/ssh").exists():
        pytest.skip("openssh-client not installed")
    port = _closed_port()
    proc = run_cli("board", "install", "--wheel", str(wheel(tmp_path)), "--host",
                   "nobody@127.0.0.1", "--port", str(port), timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("rvtorch: error:")]
    assert err and "connection refused" in err[0], proc.stderr


def test_mem_and_config() -> None:
    assert vm.parse_mem("4G") == 4096 and vm.parse_mem("3072M") == 3072
    for bad in ("lots", "512M"):
        with pytest.raises(UsageError):
            vm.parse_mem(bad)
    cfg = vm.BoardConfig.make(RV, "rvv256", 2, "2G")
    assert cfg.qemu_cpu == "rv64,v=true,vext_spec=v1.0,vlen=256"
    with pytest.raises(UsageError, match="unknown CPU model"):
        vm.BoardConfig.make(RV, "rvv512", None, None)
    with pytest.raises(UsageError, match="--smp"):
        vm.BoardConfig.make(RV, None, 0, None)


def _tree(tmp_path: Path) -> QemuTree:
    root = tmp_path / "tree"
    for f in ("usr/bin/qemu-system-riscv64", "usr/bin/qemu-system-aarch64",
              "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "usr/lib/x86_64-linux-gnu/libc.so.6",
              "usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"):
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("")
    return QemuTree(root=root, version="10.0")


def test_qemu_command(tmp_path: Path) -> None:
    from rvtorch.board.image import BoardImage

    img = BoardImage(dir=tmp_path, arch="riscv64", disk=tmp_path / "d", kernel=tmp_path / "k",
                     initrd=tmp_path / "i", key=tmp_path / "key", host_key="x", manifest={})
    files = vm.BoardFiles(tmp_path / "vm")
    argv = vm.qemu_command(RV, vm.BoardConfig.make(RV, "rvv128", 2, "4G"), _tree(tmp_path),
                           img, files, 2222)
    joined = " ".join(argv)
    assert "-cpu rv64,v=true,vext_spec=v1.0,vlen=128" in joined
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in joined and "-bios" in argv
    assert "console=ttyS0" in joined
    argv = vm.qemu_command(ARM, vm.BoardConfig.make(ARM, "a64fx", 1, "2G"), _tree(tmp_path),
                           img, files, 2223)
    assert "-bios" not in argv and "console=ttyAMA0" in " ".join(argv)
    assert argv[2] == str(tmp_path / "tree/usr/lib/x86_64-linux-gnu")  # --library-path


def _state(files: vm.BoardFiles, pid: int) -> vm.BoardState:
    return vm.BoardState(config=vm.BoardConfig.make(RV, None, 1, "1G"), pid=pid, port=1,
                         image_hash="x", started=0.0)


def test_a_crashed_boot_is_exit_4_and_keeps_the_console(tmp_path: Path) -> None:
    files = vm.BoardFiles(tmp_path)
    files.console.write_text("OpenSBI v1.6\n[    2.1] Run /init as init process\n")
    proc = subprocess.Popen(["sh", "-c", "exit 3"])
    proc.wait()
    remote = Remote(user="x", host="127.0.0.1", port=_closed_port(), connect_timeout=2)
    with pytest.raises(BuildError, match=r"died while booting \(qemu exit 3\): .*Run /init") as e:
        vm._wait_ready(RV, files, remote, _state(files, proc.pid), proc, timeout=60)
    assert e.value.exit_code == 4 and files.console.exists()


@pytest.mark.parametrize(("console", "first"), [
    ("[ 3.0] Kernel panic - not syncing: VFS: Unable to mount root\n", "Kernel panic"),
    # An initramfs that mounted a root it cannot start: its shell would wait until --timeout.
    ("[ 11.1] EXT4-fs error (device vda): checksumming directory block 0\n"
     "run-init: /sbin/init: Not a data message\nTarget filesystem doesn't have requested "
     "/sbin/init.\nNo init found. Try passing init= bootarg.\n(initramfs) ",
     "No init found"),
])
def test_a_panic_stops_the_wait(tmp_path: Path, console: str, first: str) -> None:
    files = vm.BoardFiles(tmp_path)
    files.console.write_text(console)
    proc = subprocess.Popen(["sleep", "60"])
    try:
        remote = Remote(user="x", host="127.0.0.1", port=_closed_port(), connect_timeout=2)
        with pytest.raises(BuildError, match=f"crashed while booting: {first}"):
            vm._wait_ready(RV, files, remote, _state(files, proc.pid), proc, timeout=60)
    finally:
        proc.kill()
        proc.wait()


def test_a_hung_boot_times_out(tmp_path: Path) -> None:
    files = vm.BoardFiles(tmp_path)
    files.console.write_text("[ 1.0] random: crng init done\n")
    proc = subprocess.Popen(["sleep", "60"])
    try:
        remote = Remote(user="x", host="127.0.0.1", port=_closed_port(), connect_timeout=2)
        with pytest.raises(BuildError, match=r"hung: no SSH login within 1 s .*crng init done"):
            vm._wait_ready(RV, files, remote, _state(files, proc.pid), proc, timeout=1)
    finally:
        proc.kill()
        proc.wait()


def test_status_of_no_board(tmp_path: Path) -> None:
    proc = run_cli("board", "status", "--arch", "riscv64", "--json",
                   env={"RVTORCH_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["running"] is False
    proc = run_cli("board", "ssh", "--arch", "riscv64", "--", "true",
                   env={"RVTORCH_CACHE": str(tmp_path)})
    assert proc.returncode == 2 and "no riscv64 virtual board is running" in proc.stderr


def test_a_real_board_gets_the_model_of_its_vector_unit() -> None:
    from rvtorch.board.validate import board_model

    bpi_f3 = {"machine": "riscv64", "vector": True, "vlen": 256, "isa": "rv64imafdcv"}
    assert board_model(RV, bpi_f3, None).openblas_core == "RISCV64_ZVL256B"
    vf2 = {"machine": "riscv64", "vector": False, "vlen": None}
    assert board_model(RV, vf2, None).openblas_core == "RISCV64_GENERIC"
    # VLEN 512: OpenBLAS takes its widest kernel that fits, ZVL256B.
    wide = board_model(RV, {"vector": True, "vlen": 512}, None)
    assert wide.openblas_core == "RISCV64_ZVL256B" and wide.vector
    assert board_model(RV, {}, "rvv128").name == "rvv128"


def test_venv_paths() -> None:
    assert inst._abs("~/v", "/home/u") == "/home/u/v"
    assert inst._abs("/opt/v", "/home/u") == "/opt/v"
    with pytest.raises(UsageError, match="absolute"):
        inst._abs("v", "/home/u")


def _image(tmp_path: Path, created: str) -> BoardImage:
    return BoardImage(dir=tmp_path, arch="riscv64", disk=tmp_path / "disk.raw",
                      kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.img",
                      key=tmp_path / "id_ed25519", host_key="ssh-ed25519 AAAA",
                      manifest={"recipe_hash": "abc", "created": created})


def test_an_overlay_belongs_to_the_image_it_was_made_on(tmp_path: Path) -> None:
    # A remade image under the same path: the old overlay's blocks are another file system's
    # (a board booted that way died in its initramfs with ext4 checksum errors).
    files = vm.BoardFiles(tmp_path)
    old, new = _image(tmp_path, "2026-12-04T23:20:12Z"), _image(tmp_path, "2026-12-05T06:24:19Z")
    files.disk.write_bytes(b"overlay")
    assert not vm.disk_matches(files, old)  # no disk.json: never trusted
    files.disk_stamp.write_text(json.dumps(vm.image_identity(old)))
    assert vm.disk_matches(files, old) and not vm.disk_matches(files, new)
    # The matching overlay is kept as it is (no qemu-img needed).
    tree = QemuTree(root=tmp_path / "no-qemu", version="?")
    vm._prepare_disk(tree, old, files, fresh=False)
    assert files.disk.read_bytes() == b"overlay"
    # Another image's overlay is dropped before a new one is made (here qemu-img is missing).
    with pytest.raises(BuildError, match="qemu-img missing"):
        vm._prepare_disk(tree, new, files, fresh=False)
    assert not files.disk.exists() and not files.disk_stamp.exists()


def _flaky_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int,
               message: str) -> Path:
    """An ``ssh`` first on PATH that fails ``failures`` times with ``message`` (exit 255, as
    OpenSSH does for a connection problem), then runs like a board that answered."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    count = tmp_path / "calls"
    count.write_text("0")
    script = bin_dir / "ssh"
    script.write_text(
        "#!/bin/sh\n"
        f"n=$(($(cat {count}) + 1)); echo $n > {count}\n"
        f"if [ $n -le {failures} ]; then echo '{message}' >&2; exit 255; fi\n"
        "echo answered\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr("rvtorch.board.remote.time.sleep", lambda s: None)
    return count


def test_a_connection_that_timed_out_is_tried_again(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    count = _flaky_ssh(tmp_path, monkeypatch, 2,
                       "ssh: connect to host 127.0.0.1 port 2222: Connection timed out")
    proc = Remote(user="x", host="127.0.0.1", port=2222).run("true", quiet=True)
    assert proc.stdout.strip() == "answered" and count.read_text().strip() == "3"


def test_a_board_that_stays_silent_is_one_error_after_the_last_attempt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rvtorch.board.remote import CONNECT_ATTEMPTS

    count = _flaky_ssh(tmp_path, monkeypatch, 99,
                       "Connection timed out during banner exchange")
    with pytest.raises(UsageError, match="connection timed out"):
        Remote(user="x", host="127.0.0.1", port=2222).run("true", quiet=True)
    assert count.read_text().strip() == str(CONNECT_ATTEMPTS)


def test_a_refused_key_is_never_tried_again(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    count = _flaky_ssh(tmp_path, monkeypatch, 99, "x@127.0.0.1: Permission denied (publickey).")
    with pytest.raises(UsageError, match="refused the key"):
        Remote(user="x", host="127.0.0.1", port=2222).run("true", quiet=True)
    assert count.read_text().strip() == "1"
