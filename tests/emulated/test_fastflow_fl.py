"""FastFlow federated learning in C++ on libtorch: cross-built in the image, run under QEMU.

* ``test_core_*``: the libtorch training core alone (fl_core_test, no FastFlow), against Debian's
  riscv64 libtorch 2.6.0: always runs.
* ``test_scheme``/``test_like_python_scheme``: the FastFlow programs. They need FastFlow's pinned
  source (GitHub only); without it they skip and the reason names the file, its sha256 and how to
  provide it. Nothing is ever built against a stand-in.
"""

from __future__ import annotations

import pytest

from rvtorch import fastflow_fl
from rvtorch.targets import matrix

pytestmark = pytest.mark.emulated

ROUNDS = fastflow_fl.DEFAULT_ROUNDS
WORKERS = 4


@pytest.fixture(scope="module")
def fastflow_source() -> None:
    reason = fastflow_fl.fastflow_missing()
    if reason:
        pytest.skip(reason)


CORE_ARCHES = ("riscv64", fastflow_fl.HOST)
# Per-round accuracy, riscv64 vs the x86 reference: same seeds and shards, different BLAS kernels.
PARITY_TOL = 0.03


@pytest.fixture(scope="module")
def core_runs() -> dict[str, dict[str, object]]:
    return {arch: fastflow_fl.run_core_test(arch, rounds=ROUNDS) for arch in CORE_ARCHES}


@pytest.mark.parametrize("arch", CORE_ARCHES)
def test_core(arch: str, core_runs: dict[str, dict]) -> None:
    res = core_runs[arch]
    assert res["summary"] is not None, res["stderr_tail"]
    failed = [c for c in res["checks"] if not c["ok"]]
    assert not failed, failed
    assert res["exit"] == 0
    assert res["summary"]["torch_version"].startswith("2.6.0")
    accs = [r["accuracy"] for r in res["rounds"]]
    assert len(accs) == ROUNDS and accs[-1] >= 0.9 and accs[-1] > accs[0]
    print(f"fl_core_test {arch}: {res['wall_seconds']:.1f} s, accuracy {accs}")


def test_core_target_matches_x86(core_runs: dict[str, dict]) -> None:
    rv, x86 = (core_runs[a] for a in CORE_ARCHES)
    diffs = [abs(a["accuracy"] - b["accuracy"])
             for a, b in zip(rv["rounds"], x86["rounds"], strict=True)]
    assert max(diffs) <= PARITY_TOL, (rv["rounds"], x86["rounds"])


_core_by_arch: dict[str, dict] = {}


@pytest.mark.parametrize("scheme", sorted(fastflow_fl.SCHEMES))
@pytest.mark.parametrize("arch", matrix().arches)
def test_scheme(arch: str, scheme: str, fastflow_source: None) -> None:
    res = fastflow_fl.run_fastflow_fl(arch, scheme=scheme, workers=WORKERS, rounds=ROUNDS)
    assert fastflow_fl.check_result(res) == []
    s = res["summary"]
    assert s["workers"] == WORKERS and len(set(s["final_hashes"])) == 1
    assert len(res["rounds"]) == ROUNDS
    # FastFlow must orchestrate exactly FedAvg: same initial weights, same shuffles, same
    # summation order as the sequential FedAvg of fl_core_test on the same shards, so every
    # round's global model is bit-identical to the sequential one on the same arch.
    if arch not in _core_by_arch:
        _core_by_arch[arch] = fastflow_fl.run_core_test(arch, shards_n=WORKERS, rounds=ROUNDS)
    sequential = [r["hash"] for r in _core_by_arch[arch]["rounds"]]
    key = "global_hash" if scheme == "master-worker" else "hashes"
    ours = [r[key] if isinstance(r[key], str) else r[key][0] for r in res["rounds"]]
    assert ours == sequential


@pytest.mark.parametrize("scheme", sorted(fastflow_fl.SCHEMES))
def test_like_python_scheme(scheme: str, fastflow_source: None) -> None:
    """Same shards, same hyper-parameters, weighted FedAvg: the C++ and the Python scheme end
    within a few points of accuracy of each other."""
    arch = matrix().arches[0]
    train = {**fastflow_fl.PY_SCHEME, "weighted": True}
    cpp = fastflow_fl.run_fastflow_fl(arch, scheme=scheme, workers=WORKERS, rounds=ROUNDS,
                                      train=train)
    py = fastflow_fl.run_python_fl(arch, workers=WORKERS, rounds=ROUNDS)
    acc_cpp = cpp["summary"]["final_accuracy"]
    acc_py = py["schemes"][scheme]["accuracy"][-1]
    assert cpp["summary"]["models_equal"]
    assert abs(acc_cpp - acc_py) <= 0.05, (acc_cpp, acc_py)
