#!/usr/bin/env python3
"""Cold and warm times of the toolchain image: offline base image + one image per target.

Cold runs in a private, empty container storage (``CONTAINERS_STORAGE_CONF`` pointing at a
throwaway graph root) and an empty rvtorch cache, so nothing of the machine's shared images or
layer cache helps, exactly like CI's fresh machine:

* ``base``: ``rvtorch image base`` (debootstrap --variant=minbase + import);
* ``build_<arch>``: ``rvtorch image build --arch A`` for each target in targets.toml order,
  including its self-test on every CPU model; the second target reuses the shared layers;
* warm: the same commands again (content hash unchanged: a tag lookup);
* ``rebuild_cached_<arch>``: ``rvtorch image build --force``: every layer from the cache plus
  the self-test, i.e. what a change of only the self-test or the labels costs.

Each step runs the CLI as a user would and is timed from the host; the machine's load average is
recorded with the numbers (other jobs on the same cores stretch them). Buildah only (the private
storage is a containers/storage feature; docker keeps its own).

Writes benchmarks/results/image.json. Needs root, ~15 min, network to the Debian archive and PyPI.
Run it in the background: ``.venv/bin/python benchmarks/bench_image.py > log 2>&1 &``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rvtorch.image import git_revision
from rvtorch.paths import cache_dir, repo_root
from rvtorch.targets import matrix

RESULTS = repo_root() / "benchmarks" / "results" / "image.json"


def timed(args: list[str], env: dict[str, str], log: Path) -> float:
    cmd = [sys.executable, "-m", "rvtorch", *args]
    print("+ rvtorch " + " ".join(args), file=sys.stderr, flush=True)
    start = time.monotonic()
    with log.open("a") as fh:
        r = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    took = round(time.monotonic() - start, 1)
    if r.returncode != 0:
        raise SystemExit(f"bench_image: `rvtorch {' '.join(args)}` failed (exit {r.returncode}); "
                         f"see {log}")
    print(f"  {took} s", file=sys.stderr, flush=True)
    return took


def image_size(ref: str, env: dict[str, str]) -> str:
    """Size of the image as buildah reports it (its own units, e.g. "2.26 GB")."""
    r = subprocess.run(["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}",
                        ref], env=env, capture_output=True, text=True, check=True)
    image_id = r.stdout.strip()
    r = subprocess.run(["buildah", "images", "--json"], env=env, capture_output=True, text=True,
                       check=True)
    for img in json.loads(r.stdout):
        if img.get("id") and image_id.startswith(img["id"]):
            return str(img.get("size", "?"))
    return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the private storage and cache")
    args = ap.parse_args()
    if shutil.which("buildah") is None:
        raise SystemExit("bench_image: needs buildah")
    scratch = Path(tempfile.mkdtemp(prefix="bench-image-", dir=cache_dir()))
    storage = scratch / "storage"
    conf = scratch / "storage.conf"
    conf.write_text(
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{storage / "graph"}"\n'
        f'runroot = "{storage / "run"}"\n'
    )
    log = scratch / "bench.log"
    env = {
        **os.environ,
        "CONTAINERS_STORAGE_CONF": str(conf),
        "RVTORCH_CACHE": str(scratch / "cache"),
        "RVTORCH_ENGINE": "buildah",
    }
    arches = list(matrix().arches)
    res: dict[str, object] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "revision": git_revision(),
        "engine": "buildah",
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "loadavg_1min_before": round(os.getloadavg()[0], 2),
    }
    try:
        cold: dict[str, float] = {"base": timed(["image", "base"], env, log)}
        refs: dict[str, str] = {}
        for arch in arches:
            cold[f"build_{arch}"] = timed(["image", "build", "--arch", arch], env, log)
        cold["total"] = round(sum(cold.values()), 1)
        res["cold_s"] = cold
        warm: dict[str, float] = {"base": timed(["image", "base"], env, log)}
        for arch in arches:
            warm[f"ensure_{arch}"] = timed(["image", "ensure", "--arch", arch], env, log)
        res["warm_s"] = warm
        rebuild: dict[str, float] = {}
        for arch in arches:
            rebuild[arch] = timed(["image", "build", "--arch", arch, "--force"], env, log)
            out = subprocess.run([sys.executable, "-m", "rvtorch", "image", "ensure", "--arch",
                                  arch], env=env, capture_output=True, text=True, check=True)
            refs[arch] = out.stdout.strip().splitlines()[-1]
        res["rebuild_cached_layers_s"] = rebuild
        res["image_size"] = {a: image_size(r, env) for a, r in refs.items()}
        res["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    finally:
        if not args.keep:
            # Unmount and delete the private storage through buildah itself, then the files.
            subprocess.run(["buildah", "rm", "--all"], env=env, capture_output=True, check=False)
            subprocess.run(["buildah", "rmi", "--all", "--force"], env=env, capture_output=True,
                           check=False)
            shutil.rmtree(scratch, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    tmp.replace(RESULTS)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
