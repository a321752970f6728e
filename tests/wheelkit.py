"""Make small wheels for the wheel tests, with auditwheel's own RECORD and zip tooling."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from auditwheel.tools import dir2zip, zip2dir
from auditwheel.wheeltools import rewrite_record

Content = bytes | str | Path


def make_wheel(
    out_dir: Path,
    files: Mapping[str, Content],
    *,
    version: str = "2.6.0+riscv64",
    tag: str = "cp313-cp313-linux_riscv64",
    name: str = "torch",
) -> Path:
    """A wheel holding ``files`` ({member: bytes | text | host file to copy}) plus dist-info."""
    dist_info = f"{name}-{version}.dist-info"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for member, content in files.items():
            dest = root / member
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copy(content, dest)
            elif isinstance(content, str):
                dest.write_text(content)
            else:
                dest.write_bytes(content)
        info = root / dist_info
        info.mkdir(exist_ok=True)
        if not (info / "METADATA").exists():
            (info / "METADATA").write_text(
                f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                "Requires-Python: >=3.13\n"
            )
        if not (info / "WHEEL").exists():
            (info / "WHEEL").write_text(
                "Wheel-Version: 1.0\nGenerator: rvtorch-tests\nRoot-Is-Purelib: false\n"
                f"Tag: {tag}\n"
            )
        rewrite_record(root)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{name}-{version}-{tag}.whl"
        dir2zip(root, path, 6, None)
    return path


def rewrite_wheel(wheel: Path, changes: Mapping[str, Content | None], out: Path | None = None,
                  *, keep_record: bool = False) -> Path:
    """A copy of ``wheel`` with members added/replaced (or removed with None); RECORD rewritten
    unless ``keep_record`` (to fabricate a wheel whose RECORD lies)."""
    out = out or wheel
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        zip2dir(wheel, root)
        for member, content in changes.items():
            dest = root / member
            if content is None:
                dest.unlink()
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copy(content, dest)
            elif isinstance(content, str):
                dest.write_text(content)
            else:
                dest.write_bytes(content)
        if not keep_record:
            rewrite_record(root)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_name(out.name + ".tmp")
        dir2zip(root, tmp_out, 6, None)
        tmp_out.replace(out)
    return out
