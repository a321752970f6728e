"""Every flag that names a path, a URL or a version is checked at parse time, and every argument
error prints its one-line reason first (exit 2), before any long work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from rvtorch.aptsource import check_mirror_url
from rvtorch.cli import build_parser, main
from rvtorch.errors import UsageError
from rvtorch.paths import check_writable_dir
from tests.conftest import run_cli


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``rvtorch ARGV`` in this process (parse-time errors need no subprocess): (code, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def one_line_error(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("rvtorch: error: "), stderr
    return lines[0]


def test_out_that_cannot_be_made_fails_at_parse_time_even_for_a_dry_run() -> None:
    r = run_cli("build", "--arch", "riscv64", "--source", "debian", "--out", "/proc/nope",
                "--dry-run")
    assert r.returncode == 2 and r.stdout == ""
    assert "--out" in one_line_error(r.stderr) and "/proc/nope" in r.stderr


def test_out_that_is_a_file_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "dist"
    f.write_text("")
    code, err = cli(capsys, "build", "--arch", "riscv64", "--source", "debian", "--out", str(f),
                    "--dry-run")
    assert code == 2 and "not a directory" in one_line_error(err)


def test_a_dry_run_proves_out_without_creating_it(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "dist"
    r = run_cli("build", "--arch", "riscv64", "--source", "debian", "--out", str(out),
                "--dry-run")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []


def test_validate_report_is_created_when_parsed_and_refused_when_impossible(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "r" / "report"
    wheel = tmp_path / "torch-2.6.0-cp313-cp313-linux_riscv64.whl"
    wheel.write_bytes(b"PK")
    args = build_parser().parse_args(["validate", "--arch", "riscv64", "--wheel", str(wheel),
                                      "--report", str(report)])
    assert args.report == report and report.is_dir()
    code, err = cli(capsys, "validate", "--arch", "riscv64", "--rootfs-torch",
                    "--report", "/proc/nope")
    assert code == 2 and "--report" in one_line_error(err)
    code, err = cli(capsys, "validate", "--arch", "riscv64", "--wheel",
                    str(tmp_path / "missing.whl"), "--report", str(report))
    assert code == 2 and "not found" in one_line_error(err)


@pytest.mark.parametrize("mirror", ["notaurl", "http://[::1", "http://", "ftp//x",
                                    "http://host:99999/debian", "gopher://host/debian",
                                    "file://host/srv/debian"])
def test_malformed_mirror_is_a_usage_error(mirror: str) -> None:
    with pytest.raises(UsageError):
        check_mirror_url(mirror)


@pytest.mark.parametrize("argv", [["source", "fetch", "--source", "debian"],
                                  ["build", "--arch", "riscv64", "--source", "debian",
                                   "--dry-run"],
                                  ["patches", "check", "--source", "debian"],
                                  ["rootfs", "create", "--arch", "riscv64"],
                                  ["image", "base"]])
def test_malformed_mirror_flag_fails_at_parse_time(argv: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for mirror in ("notaurl", "http://[::1"):
        code, err = cli(capsys, *argv, "--debian-mirror", mirror)
        assert code == 2 and "--debian-mirror" in one_line_error(err), argv


def test_good_mirrors_pass() -> None:
    assert check_mirror_url("http://deb.example.org/debian/") == "http://deb.example.org/debian"
    assert check_mirror_url("http://[::1]:8080/debian") == "http://[::1]:8080/debian"
    assert check_mirror_url("file:///srv/debian") == "file:///srv/debian"


def test_malformed_mirror_in_the_environment_fails_before_work(tmp_path: Path) -> None:
    env = {"RVTORCH_DEBIAN_MIRROR": "http://[::1", "RVTORCH_CACHE": str(tmp_path / "c")}
    r = run_cli("source", "fetch", "--source", "debian", env=env)
    assert r.returncode == 2 and "RVTORCH_DEBIAN_MIRROR" in one_line_error(r.stderr)
    assert not (tmp_path / "c" / "sources").exists()
    # A command that fetches nothing is not stopped by it.
    assert run_cli("targets", "--arches", env=env).returncode == 0


@pytest.mark.parametrize("argv, needle", [
    (["build"], "--arch"),
    (["build", "--arch", "riscv64", "--cache", "nope"], "--cache"),
    (["build", "--arch", "riscv64", "--jobs", "0"], "--jobs"),
    (["build", "--arch", "riscv64", "--torch-version", "9.9"], "unknown torch version"),
    (["source", "unpack", "--torch-version", "2.6.O", "/tmp/x"], "did you mean"),
    (["patches", "check", "--patch-dir", "/nonexistent/series"], "not found"),
    (["patches", "apply", "/nonexistent/tree"], "not found"),
    (["run", "--arch", "riscv64", "--rootfs", "/nonexistent", "--", "true"], "--rootfs"),
    (["nosuchcommand"], "invalid choice"),
    (["deps", "fetch", "--openblas-version", "0.3.3"], "did you mean"),
    (["deps", "fetch", "--source-mirror", "/nonexistent"], "--source-mirror"),
    (["bench", "gemm", "--output", "/proc/nope/gemm.json"], "--output"),
    (["bench", "gemm", "--ours", "/nonexistent/libopenblas.so.0"], "--ours"),
])
def test_argument_errors_print_the_reason_first(argv: list[str], needle: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, err = cli(capsys, *argv)
    assert code == 2
    assert needle in one_line_error(err)


def test_writable_dir_probe_is_real(tmp_path: Path) -> None:
    made = check_writable_dir(tmp_path / "x" / "y", create=True)
    assert made.is_dir() and list(made.iterdir()) == []
    with pytest.raises(UsageError, match="not writable"):
        check_writable_dir(Path("/proc/nope"), create=False)
    with pytest.raises(UsageError, match="not writable"):
        check_writable_dir(Path("/proc/nope"), create=True)
