"""The FL suite's own functions (src/rvtorch/validate/fl.py), natively.

The shards reader is standard library only; training and the rank processes need torch and skip
without it (torch is not in the dev extra, see test_validate_reflow.py).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from rvtorch.digits import ensure_shards
from rvtorch.validate import fl

needs_torch = pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None,
    reason="torch is not installed in this venv (RVTORCH_TEST_TORCH names a pip requirement "
    "for scripts/test.sh to install); "
           "the emulated tier runs these modules in the x86 reference rootfs")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_shards(3, seed=0, alpha=0.5, cache=tmp_path_factory.mktemp("digits"))


def test_read_shards_with_the_standard_library(shards: Path) -> None:
    d = fl.read_shards(str(shards))
    assert (d["n_features"], d["n_classes"], len(d["shards"])) == (64, 10, 3)
    sizes = [len(y) for _, y in d["shards"]]
    assert all(len(x) == 64 * n for (x, _), n in zip(d["shards"], sizes, strict=True))
    labels = [set(y) for _, y in d["shards"]]
    assert all(lab <= set(range(10)) for lab in labels)
    assert 0.0 <= min(d["test"][0]) and max(d["test"][0]) <= 1.0


def test_read_shards_refuses_another_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"NOTDIGIT" + bytes(64))
    with pytest.raises(ValueError, match="not a digits shards file"):
        fl.read_shards(str(bad))


@needs_torch
def test_local_training_is_reproducible_and_learns(shards: Path) -> None:
    import argparse

    import torch

    d = fl.read_shards(str(shards))
    x, y = fl.to_tensors(d["shards"][0], d["n_features"])
    xt, yt = fl.to_tensors(d["test"], d["n_features"])
    args = argparse.Namespace(lr=0.1, local_epochs=2, batch=16, seed=4321)
    finals = []
    for _ in range(2):
        torch.manual_seed(0)
        model = fl.make_model(64, 10)
        before = fl.accuracy(model, xt, yt)
        fl.local_train(model, x, y, args, rank=0, rnd=0)
        finals.append(fl.flat(model))
    assert torch.equal(finals[0], finals[1])
    assert fl.accuracy(model, x, y) > before


@needs_torch
def test_three_ranks_natively_check_their_group_and_weights(shards: Path) -> None:
    """Three real rank processes over gloo on 127.0.0.1 (this venv's Python): every rank checks
    that the collectives return the right values and that its gathered weights agree."""
    from rvtorch.validation import Options, PyEnv, copy_package, run_fl

    env = PyEnv(name="host", rootfs=None, python=sys.executable)
    opts = Options(arch="riscv64", cpus=(), suites=("fl",), report=Path("unused"),
                   fl_timeout=60.0, fl_rounds=1)
    with env.workdir() as (hdir, gdir):
        copy_package(hdir)
        (hdir / "data").mkdir()
        shutil.copy2(shards, hdir / "data" / "digits.bin")
        run_fl(env, gdir, hdir, "host", opts, cpu=None, tag="")
        results = [json.loads((hdir / f"fl_rank{r}.json").read_text()) for r in range(3)]
    for rank, res in enumerate(results):
        by = {c["name"]: c for c in res["checks"]}
        assert by["process_group"]["ok"], by["process_group"]
        assert by["process_group"]["value"] == {"all_reduce": 3.0, "all_gather": [0, 1, 2]}
        assert by["master-worker:ranks_identical"]["ok"]
        assert by["peer-to-peer:ranks_identical"]["ok"]
        assert "rank_finished" not in by
        if rank:
            assert set(by) == {"process_group", "master-worker:ranks_identical",
                               "peer-to-peer:ranks_identical"}
