"""Unit tests of rvtorch.emulate: binfmt parsing, guest command construction, clean guest env."""

from __future__ import annotations

import os
import select
from pathlib import Path

import pytest

from rvtorch import emulate
from rvtorch.emulate import (
    BinfmtEntry,
    binfmt_magic_mask,
    binfmt_state,
    guest_command,
    guest_env,
    parse_binfmt_entry,
    register,
    resolve_in_rootfs,
)
from rvtorch.errors import UsageError
from rvtorch.targets import matrix, target

# What the kernel shows for a qemu entry registered with P only (no F): the interpreter must then
# exist inside the chroot. Debian 12's binfmt-support entry has both ("fix_binary yes").
DEBIAN_RISCV64_ENTRY = """enabled
interpreter /usr/libexec/qemu-binfmt/riscv64-binfmt-P
flags: P
offset 0
magic 7f454c460201010000000000000000000200f300
mask ffffffffffffff00fffffffffffffffffeffffff
"""

# The kernel prints "flags: " with a trailing space when there are none.
JAR_ENTRY = "enabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n"


def test_parse_binfmt_entry() -> None:
    e = parse_binfmt_entry("qemu-riscv64", DEBIAN_RISCV64_ENTRY)
    assert e.enabled and e.flags == "P" and not e.fix_binary and not e.ours
    assert e.interpreter == "/usr/libexec/qemu-binfmt/riscv64-binfmt-P"
    assert e.magic[:4] == b"\x7fELF" and len(e.mask) == len(e.magic) == 20
    assert e.matches(emulate.elf_header(target("riscv64")))
    assert not e.matches(emulate.elf_header(target("aarch64")))
    jar = parse_binfmt_entry("jar", JAR_ENTRY)
    assert jar.extension == ".jar" and not jar.matches(emulate.elf_header(target("riscv64")))


def test_our_magic_matches_what_debian_registers() -> None:
    magic, mask = binfmt_magic_mask(target("riscv64"))
    e = parse_binfmt_entry("x", DEBIAN_RISCV64_ENTRY)
    assert (magic, mask) == (e.magic, e.mask)
    # Shared objects (ET_DYN = 3, what PIE executables are) match too.
    header = bytearray(emulate.elf_header(target("riscv64")))
    header[16] = 3
    own = BinfmtEntry(name="rvtorch-riscv64", enabled=True, interpreter="/q", flags="F",
                      magic=magic, mask=mask)
    assert own.matches(bytes(header)) and own.ours


def test_every_target_has_a_known_elf_machine() -> None:
    headers = {emulate.elf_header(t) for t in matrix().targets}
    assert len(headers) == len(matrix().targets)


def _fake_binfmt(tmp_path: Path, entries: dict[str, str], status: str = "enabled") -> Path:
    root = tmp_path / "binfmt_misc"
    root.mkdir()
    (root / "register").write_text("")
    (root / "status").write_text(status + "\n")
    for name, text in entries.items():
        (root / name).write_text(text)
    return root


def test_binfmt_state_usable_needs_f_flag_or_interpreter_in_rootfs(tmp_path: Path) -> None:
    root = _fake_binfmt(tmp_path, {"qemu-riscv64": DEBIAN_RISCV64_ENTRY, "jar": JAR_ENTRY})
    st = binfmt_state(target("riscv64"), root)
    assert st.mounted and [e.name for e in st.entries] == ["qemu-riscv64"]
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    assert not st.usable_in(rootfs)  # P without F: interpreter must exist inside the chroot
    interp = rootfs / "usr/libexec/qemu-binfmt/riscv64-binfmt-P"
    interp.parent.mkdir(parents=True)
    interp.write_text("")
    assert st.usable_in(rootfs)
    assert not binfmt_state(target("aarch64"), root).usable_in(rootfs)


def test_binfmt_state_unmounted_and_disabled(tmp_path: Path) -> None:
    st = binfmt_state(target("riscv64"), tmp_path / "nothing")
    assert not st.mounted and not st.usable_in(None) and "not mounted" in st.describe()
    root = _fake_binfmt(tmp_path, {"rvtorch-riscv64": DEBIAN_RISCV64_ENTRY.replace("P\n", "F\n")},
                        status="disabled")
    st = binfmt_state(target("riscv64"), root)
    assert not st.usable_in(None) and "disabled" in st.describe()


def test_register_writes_an_f_entry_under_our_name(tmp_path: Path) -> None:
    root = _fake_binfmt(tmp_path, {})
    name = register(target("riscv64"), "/usr/bin/qemu-riscv64-static", root)
    line = (root / "register").read_text()
    assert name == "rvtorch-riscv64"
    assert line.startswith(":rvtorch-riscv64:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00")
    assert line.endswith(":/usr/bin/qemu-riscv64-static:F")
    assert "\\xf3\\x00:" in line  # EM_RISCV = 243, little endian


def _fake_rootfs(tmp_path: Path) -> Path:
    """A merged-/usr tree like Debian's: /bin -> usr/bin, python3 -> python3.13."""
    root = tmp_path / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    (root / "tmp").mkdir()
    (root / "usr/bin/python3.13").write_bytes(b"\x7fELF fake")
    (root / "usr/bin/python3").symlink_to("python3.13")
    (root / "bin").symlink_to("usr/bin")
    (root / "usr/bin/abs-python").symlink_to("/bin/python3")
    (root / "usr/bin/script").write_text("#!/usr/bin/python3 -u\nprint(1)\n")
    return root


def test_resolve_in_rootfs_follows_links_inside_the_rootfs(tmp_path: Path) -> None:
    root = _fake_rootfs(tmp_path)
    assert resolve_in_rootfs(root, "/bin/python3") == root / "usr/bin/python3.13"
    assert resolve_in_rootfs(root, "/usr/bin/abs-python") == root / "usr/bin/python3.13"
    assert resolve_in_rootfs(root, "/usr/../bin/./python3") == root / "usr/bin/python3.13"
    (root / "usr/bin/loop").symlink_to("loop")
    with pytest.raises(UsageError, match="too many symlinks"):
        resolve_in_rootfs(root, "/usr/bin/loop")


def test_qemu_path_is_what_qemu_minus_l_opens(tmp_path: Path) -> None:
    """Under the rootfs first, else the host path; an absolute link met on the host side is a
    guest path again (a venv's bin/python -> /usr/bin/python3 in a scratch dir)."""
    root = _fake_rootfs(tmp_path)
    assert emulate.qemu_path(root, "/bin/python3") == root / "usr/bin/python3.13"
    scratch = root / "tmp" / "rvtorch-x" / "venv" / "bin"
    scratch.mkdir(parents=True)
    (scratch / "python").symlink_to("/usr/bin/python3")
    (scratch / "python3").symlink_to("python")
    assert emulate.qemu_path(root, str(scratch / "python3")) == root / "usr/bin/python3.13"
    assert emulate.qemu_path(root, str(tmp_path / "elsewhere")) == tmp_path / "elsewhere"


def test_guest_command_qemu_mode_keeps_the_venv_argv0(tmp_path: Path,
                                                      host_env_with_openblas: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A venv's python finds its pyvenv.cfg from argv[0]: QEMU must pass the venv path."""
    monkeypatch.setenv("RVTORCH_EMULATION", "qemu")
    root = _fake_rootfs(tmp_path)
    venv = root / "tmp" / "v"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python3").symlink_to("/usr/bin/python3")
    cmd, _ = guest_command("riscv64", [str(venv / "bin/python3"), "-V"], rootfs=root)
    i = cmd.index("-0")
    assert cmd[i + 1:i + 3] == [str(venv / "bin/python3"), str(root / "usr/bin/python3.13")]


@pytest.fixture
def host_env_with_openblas(monkeypatch: pytest.MonkeyPatch) -> None:
    # The variables this machine really carries (FACTS), plus something else host-only.
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/host/lib")
    monkeypatch.setenv("QEMU_LD_PREFIX", "/")
    monkeypatch.setattr(emulate, "is_root", lambda: True)
    monkeypatch.setattr(emulate, "qemu_binary", lambda t: f"/usr/bin/{t.qemu_binary}")
    # Unit tests start no QEMU: the CPU probe is exercised in tests/emulated.
    monkeypatch.setattr(emulate, "_checked_cpu", lambda binary, cpu, rootfs: None)


def test_guest_env_is_built_from_nothing(host_env_with_openblas: None) -> None:
    env = guest_env({"OPENBLAS_VERBOSE": "2"})
    assert set(env) == {"PATH", "HOME", "LANG", "TMPDIR", "OPENBLAS_VERBOSE"}
    assert env["LANG"] == "C.UTF-8" and "OPENBLAS_CORETYPE" not in env


def test_guest_command_qemu_mode(tmp_path: Path, host_env_with_openblas: None,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RVTORCH_EMULATION", "qemu")
    root = _fake_rootfs(tmp_path)
    cmd, env = guest_command("riscv64", ["python3", "-c", "pass"], cpu="rvv128", rootfs=root,
                             env={"OMP_NUM_THREADS": "1"})
    assert cmd == ["/usr/bin/qemu-riscv64-static", "-L", str(root), "-cpu",
                   "rv64,v=true,vext_spec=v1.0,vlen=128", "-0", "/usr/bin/python3",
                   str(root / "usr/bin/python3.13"), "-c", "pass"]
    assert not any(k.startswith(("OPENBLAS_", "QEMU_", "LD_")) for k in env)
    assert env["OMP_NUM_THREADS"] == "1"
    # New files under the guest's TMPDIR must land in the rootfs, not on the host's /tmp.
    assert env["TMPDIR"] == str(root / "tmp")


def test_guest_command_qemu_mode_runs_scripts_through_their_interpreter(
    tmp_path: Path, host_env_with_openblas: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RVTORCH_EMULATION", "qemu")
    root = _fake_rootfs(tmp_path)
    cmd, _ = guest_command("riscv64", ["script", "a"], rootfs=root, cwd="/tmp")
    assert cmd[:2] == ["env", f"--chdir={root / 'tmp'}"]
    assert cmd[-4:] == [str(root / "usr/bin/python3.13"), "-u", "/usr/bin/script", "a"]
    assert cmd[cmd.index("-0") + 1] == "/usr/bin/python3"  # the interpreter's guest path
    assert cmd[cmd.index("-cpu") + 1] == "rv64"  # default: the first (scalar) model


def test_guest_command_binfmt_mode(tmp_path: Path, host_env_with_openblas: None,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = _fake_rootfs(tmp_path)
    st = emulate.BinfmtState(mounted=True, enabled=True, entries=(
        BinfmtEntry(name="rvtorch-riscv64", enabled=True, interpreter="/q", flags="F"),))
    monkeypatch.setattr(emulate, "binfmt_state", lambda t: st)
    cmd, env = guest_command("riscv64", ["python3", "-V"], cpu="rvv256", rootfs=root)
    assert cmd == [*emulate.chroot_prefix(root), str(root), "python3", "-V"]
    assert cmd[0] == "unshare" and "exec chroot" in cmd[-4]
    # The private mount namespace needs these mount points.
    assert all((root / d).is_dir() for d in ("proc", "sys", "dev/shm"))
    assert env["QEMU_CPU"] == "rv64,v=true,vext_spec=v1.0,vlen=256"
    assert env["TMPDIR"] == "/tmp" and "OPENBLAS_CORETYPE" not in env
    # Forcing the explicit mode works even when binfmt is there.
    monkeypatch.setenv("RVTORCH_EMULATION", "qemu")
    cmd, _ = guest_command("riscv64", ["python3", "-V"], rootfs=root)
    assert cmd[0] == "/usr/bin/qemu-riscv64-static"


def test_binfmt_forced_but_missing_is_a_usage_error(
    tmp_path: Path, host_env_with_openblas: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulate, "binfmt_state", lambda t: emulate.BinfmtState(
        mounted=False, enabled=False, entries=()))
    root = _fake_rootfs(tmp_path)
    monkeypatch.setenv("RVTORCH_EMULATION", "binfmt")
    with pytest.raises(UsageError) as exc:
        guest_command("riscv64", ["python3"], rootfs=root)
    assert "rvtorch emulator setup --arch riscv64" in exc.value.one_line()
    monkeypatch.setenv("RVTORCH_EMULATION", "bfmt")
    with pytest.raises(UsageError) as exc:
        guest_command("riscv64", ["python3"], rootfs=root)
    assert "did you mean 'binfmt'" in exc.value.one_line()


def test_unknown_arch_and_cpu_hint(tmp_path: Path, host_env_with_openblas: None) -> None:
    with pytest.raises(UsageError) as exc:
        guest_command("riscv6", ["true"], rootfs=tmp_path)
    assert "did you mean 'riscv64'" in exc.value.one_line()
    with pytest.raises(UsageError) as exc:
        guest_command("riscv64", ["true"], cpu="rvv129", rootfs=_fake_rootfs(tmp_path))
    assert "did you mean" in exc.value.one_line()


def test_missing_program_and_not_a_rootfs(tmp_path: Path, host_env_with_openblas: None,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RVTORCH_EMULATION", "qemu")
    with pytest.raises(UsageError, match="not a root filesystem"):
        guest_command("riscv64", ["true"], rootfs=tmp_path)
    with pytest.raises(UsageError, match="not found on the guest PATH"):
        guest_command("riscv64", ["gcc"], rootfs=_fake_rootfs(tmp_path))


def test_host_arch_is_native_chroot(tmp_path: Path, host_env_with_openblas: None,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = _fake_rootfs(tmp_path)
    cmd, env = guest_command("host", ["python3", "-V"], rootfs=root, cwd="/etc")
    assert cmd[0] == "unshare" and "QEMU_CPU" not in env
    assert cmd[-5:] == [str(root), "/usr/bin/env", "--chdir=/etc", "python3", "-V"]
    monkeypatch.setattr(emulate, "is_root", lambda: False)
    with pytest.raises(UsageError, match="needs root"):
        guest_command("host", ["python3"], rootfs=root)


def test_guest_tmpdir_paths_per_mode(tmp_path: Path, host_env_with_openblas: None,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root = _fake_rootfs(tmp_path)
    monkeypatch.setenv("RVTORCH_EMULATION", "qemu")
    with emulate.guest_tmpdir(root, "riscv64") as (host, guest):
        assert host.parent == root / "tmp" and guest == str(host)
    assert not host.exists()
    with emulate.guest_tmpdir(root, "host") as (host, guest):
        assert guest == "/tmp/" + host.name and os.access(host, os.W_OK)
    with pytest.raises(UsageError, match="manifest"), emulate.guest_tmpdir(root):
        pass


def test_cpu_rejected_by_local_qemu_is_a_usage_error(
    tmp_path: Path, host_env_with_openblas: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RVTORCH_EMULATION", "qemu")
    monkeypatch.setattr(emulate, "_checked_cpu",
                        lambda binary, cpu, rootfs: "unable to find CPU model" if "256" in cpu
                        else None)
    monkeypatch.setattr(emulate, "qemu_version", lambda binary: "7.2.22")
    root = _fake_rootfs(tmp_path)
    guest_command("riscv64", ["python3"], cpu="rvv128", rootfs=root)
    with pytest.raises(UsageError) as exc:
        guest_command("riscv64", ["python3"], cpu="rvv256", rootfs=root)
    msg = exc.value.one_line()
    assert "qemu 7.2.22" in msg and "'rvv256'" in msg and "rv64, rvv128, rvv256" in msg


def test_chroot_works_probes_only_when_entries_disagree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probed: list[Path] = []

    def fake_probe(rootfs: Path, state: emulate.BinfmtState) -> bool:
        probed.append(rootfs)
        return True

    monkeypatch.setattr(emulate, "_chroot_true", fake_probe)
    debian = parse_binfmt_entry("qemu-riscv64", DEBIAN_RISCV64_ENTRY)
    ours = BinfmtEntry(name="rvtorch-riscv64", enabled=True, interpreter="/q", flags="F")
    root = _fake_rootfs(tmp_path)

    def state(*entries: BinfmtEntry) -> emulate.BinfmtState:
        return emulate.BinfmtState(mounted=True, enabled=True, entries=entries)

    assert emulate.chroot_works(state(ours), root) and not probed
    assert not emulate.chroot_works(state(debian), root) and not probed
    assert emulate.chroot_works(state(debian, ours), root) and probed == [root]


def test_teardown_removes_only_our_entries(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root = _fake_binfmt(tmp_path, {"qemu-riscv64": DEBIAN_RISCV64_ENTRY,
                                   "rvtorch-riscv64": DEBIAN_RISCV64_ENTRY,
                                   "rvtorch-aarch64": DEBIAN_RISCV64_ENTRY})
    monkeypatch.setattr(emulate, "is_root", lambda: True)
    # The kernel removes an entry when "-1" is written to it; the fake records the write.
    assert emulate.teardown(["riscv64"], root) == ["rvtorch-riscv64"]
    assert (root / "rvtorch-riscv64").read_text() == "-1"
    assert (root / "qemu-riscv64").read_text() == DEBIAN_RISCV64_ENTRY
    assert (root / "rvtorch-aarch64").read_text() == DEBIAN_RISCV64_ENTRY


def test_setup_and_teardown_refuse_without_root(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from rvtorch.cli import main

    monkeypatch.setattr(emulate, "is_root", lambda: False)
    assert main(["emulator", "setup", "--arch", "riscv64"]) == 2
    err = capsys.readouterr().err
    assert "needs root" in err and "sudo rvtorch emulator setup" in err
    assert main(["emulator", "setup", "--arch", "riscv6"]) == 2
    assert "did you mean 'riscv64'" in capsys.readouterr().err


class _FakeBinfmt:
    """A binfmt_misc stand-in shared by processes through a file: registered or not."""

    def __init__(self, tmp: Path) -> None:
        self.flag = tmp / "registered"
        self.log = tmp / "calls"

    def usable(self) -> bool:
        return self.flag.exists()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fake = self

        class State:
            def usable_in(self, _root: object) -> bool:
                return fake.usable()

        def reg(_t: object, _q: str) -> str:
            fake.flag.write_text("1")
            with fake.log.open("a") as fh:
                fh.write(f"register {os.getpid()}\n")
            return "rvtorch-riscv64"

        def unreg(_name: str) -> None:
            fake.flag.unlink(missing_ok=True)
            with fake.log.open("a") as fh:
                fh.write(f"unregister {os.getpid()}\n")

        monkeypatch.setattr(emulate, "binfmt_state", lambda _t: State())
        monkeypatch.setattr(emulate, "register", reg)
        monkeypatch.setattr(emulate, "unregister", unreg)
        monkeypatch.setattr(emulate, "is_root", lambda: True)
        monkeypatch.setattr(emulate, "mount_binfmt", lambda: None)
        monkeypatch.setattr(emulate, "qemu_binary", lambda _t: "/usr/bin/qemu-riscv64-static")


def test_a_temporary_binfmt_entry_stays_while_another_process_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two toolkit processes make rootfs at once: the one that registered the entry leaves
    first, and the entry must stay until the other is done (the last one out removes it)."""
    monkeypatch.setenv("RVTORCH_CACHE", str(tmp_path / "cache"))
    fake = _FakeBinfmt(tmp_path)
    fake.install(monkeypatch)
    t = target("riscv64")
    inside, leave = os.pipe(), os.pipe()
    pid = -1
    try:
        with emulate.binfmt_registered(t) as registered:
            assert registered and fake.usable()
            pid = os.fork()
            if pid == 0:  # the second user: finds the entry, uses it until told to leave
                code = 1
                try:
                    with emulate.binfmt_registered(t) as mine:
                        os.write(inside[1], b"1" if not mine else b"0")
                        select.select([leave[0]], [], [], 30)  # never hangs the suite
                        code = 0 if fake.usable() else 3
                finally:
                    os._exit(code)
            assert select.select([inside[0]], [], [], 30)[0], "the second user never started"
            assert os.read(inside[0], 1) == b"1"
        assert fake.usable(), "the first process removed the entry under the second one"
    finally:
        os.write(leave[1], b"x")
        if pid > 0:
            _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not fake.usable(), "the last user must remove the temporary entry"
    assert [ln.split()[0] for ln in fake.log.read_text().splitlines()] == ["register",
                                                                           "unregister"]


def test_an_entry_from_emulator_setup_is_never_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RVTORCH_CACHE", str(tmp_path / "cache"))
    fake = _FakeBinfmt(tmp_path)
    fake.install(monkeypatch)
    fake.flag.write_text("1")  # registered before, permanently (no temporary marker)
    with emulate.binfmt_registered(target("riscv64")) as registered:
        assert not registered
    assert fake.usable() and not fake.log.exists()


def test_the_emulation_mode_is_fixed_for_a_run(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A venv made under explicit `qemu -L` has host paths; if another process registers a
    binfmt entry midway, the run must not switch to chroot (where those paths do not exist)."""
    monkeypatch.setenv("RVTORCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(emulate.MODE_ENV, raising=False)
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr").mkdir(parents=True)
    entry = {"usable": False}
    monkeypatch.setattr(emulate, "is_root", lambda: True)
    monkeypatch.setattr(emulate, "chroot_works", lambda _state, _root: entry["usable"])
    monkeypatch.setattr(emulate, "binfmt_state", lambda _t: None)
    assert emulate.mode_for("riscv64", rootfs) == "qemu"
    with emulate.pinned_mode("riscv64", rootfs) as mode:
        assert mode == "qemu"
        entry["usable"] = True  # another process registers an entry
        assert emulate.mode_for("riscv64", rootfs) == "qemu"
        with emulate.pinned_mode("riscv64", rootfs) as inner:  # nested: the same mode
            assert inner == "qemu"
    assert emulate.mode_for("riscv64", rootfs) == "binfmt"
    with emulate.pinned_mode("riscv64", rootfs) as mode:
        entry["usable"] = False  # an entry disabled by hand: still binfmt for this run
        assert mode == emulate.mode_for("riscv64", rootfs) == "binfmt"
