"""The ReFlow suite's own functions (src/rvtorch/validate/reflow.py), run natively.

The target-side modules need torch. The project's dev extra does not pull it (a CPU build is
~200 MB from PyPI's CPU index, not seconds in CI); where it is missing these tests skip with that
reason, and the emulated tier runs the same suite in the x86 reference rootfs (Debian's torch).
Install it with `.venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu`.
"""

from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip(
    "torch", reason="torch is not installed in this venv (RVTORCH_TEST_TORCH names a pip "
                    "requirement for scripts/test.sh to install)")

from rvtorch.validate import reflow  # noqa: E402
from rvtorch.validate.common import Result  # noqa: E402

N = 1000


def ring(n: int = N, seed: int = 0) -> Any:
    """Samples spread evenly round the circle through the 8 modes: what a teacher that has not
    learnt its data produced (radius 2, the data's own radial noise)."""
    g = torch.Generator().manual_seed(seed)
    ang = torch.rand(n, generator=g) * 2 * math.pi
    r = 2.0 + 0.15 * torch.randn(n, generator=g)
    return torch.stack([r * torch.cos(ang), r * torch.sin(ang)], dim=1)


def eight_clusters(n: int = N, seed: int = 0) -> Any:
    return reflow.sample_data("8gaussians", n, torch.Generator().manual_seed(seed))


def verdicts(x: Any, *, one_step: bool = False) -> dict[str, bool]:
    stats = reflow.mode_stats(x, reflow.gaussian_centers(), reflow.MODE_RADIUS)
    return {k: v["ok"] for k, v in reflow.mode_verdicts(stats, one_step=one_step).items()}


def test_mode_stats_counts_shares_of_all_samples() -> None:
    c = reflow.gaussian_centers()
    # Two points on mode 0, one on mode 3 (slightly off centre), one far from every mode.
    x = torch.stack([c[0], c[0] + torch.tensor([0.1, 0.0], dtype=torch.float64),
                     c[3] + torch.tensor([0.0, 0.3], dtype=torch.float64),
                     torch.tensor([0.0, 0.0], dtype=torch.float64)]).float()
    s = reflow.mode_stats(x, c, 0.45)
    assert s["n"] == 4
    assert s["mass"][0] == 0.5 and s["mass"][3] == 0.25 and sum(s["mass"]) == 0.75
    assert s["off_mode"] == 0.25


def test_eight_clusters_pass_every_mode_check() -> None:
    assert verdicts(eight_clusters()) == {"mode_coverage": True, "mode_mass": True,
                                          "off_mode": True}


def test_a_ring_through_the_modes_fails_the_mode_checks() -> None:
    """The failure the old teacher showed: every mode is touched, but ~43% of the samples lie
    between modes and each mode holds ~7% instead of 12.5%."""
    stats = reflow.mode_stats(ring(), reflow.gaussian_centers(), reflow.MODE_RADIUS)
    assert stats["off_mode"] > 0.35
    assert verdicts(ring()) == {"mode_coverage": True, "mode_mass": False, "off_mode": False}
    # A ring also fails the looser one-step bound.
    assert verdicts(ring(), one_step=True)["off_mode"] is False


def test_a_ring_is_invisible_to_sliced_wasserstein() -> None:
    """Why the mode checks exist: at 1000 points the ring's sliced W to the data is within the
    spread of two independent data sets' own distance."""
    held = eight_clusters(seed=1)
    sw_ring = reflow.sliced_wasserstein(ring(), held, 256)
    sw_data = [reflow.sliced_wasserstein(eight_clusters(seed=s), held, 256) for s in (2, 3, 4)]
    assert sw_ring < 1.5 * max(sw_data)


def test_a_missing_mode_fails_coverage() -> None:
    x = eight_clusters()
    c = reflow.gaussian_centers().float()
    near3 = (x - c[3]).norm(dim=1) < 1.0
    x[near3] = x[near3] - c[3] + c[4]  # mode 3's samples moved onto mode 4
    v = verdicts(x)
    assert v["mode_coverage"] is False and v["mode_mass"] is False and v["off_mode"] is True
    assert verdicts(x, one_step=True)["mode_coverage"] is False


def test_unbalanced_modes_fail_the_mass_check_only() -> None:
    x = eight_clusters()
    c = reflow.gaussian_centers().float()
    on1 = ((x - c[1]).norm(dim=1) < 1.0).nonzero().flatten()
    on0 = ((x - c[0]).norm(dim=1) < 1.0).nonzero().flatten()
    take = on1[: len(on1) // 2]
    x[take] = x[take] - c[1] + c[0]  # half of mode 1 moved to mode 0: 19% vs 6%
    assert len(on0) + len(take) > 0.17 * N
    assert verdicts(x) == {"mode_coverage": True, "mode_mass": False, "off_mode": True}


def test_blurred_clusters_pass_the_one_step_bound_but_not_the_strict_one() -> None:
    g = torch.Generator().manual_seed(5)
    x = eight_clusters() + 0.22 * torch.randn(N, 2, generator=g)  # std 0.27 instead of 0.15
    assert verdicts(x, one_step=True) == {"mode_coverage": True, "off_mode": True}
    assert verdicts(x)["off_mode"] is False


def _metrics(samples: dict[str, Any], *, straight: float, sw1: float, var1: float,
             dist: float) -> dict[str, Any]:
    c = reflow.gaussian_centers()
    return {"straightness": straight, "sw_euler1": sw1, "var_ratio_euler1": var1,
            "dist_to_ref_heun9_uniform": dist, "dist_to_ref_heun9_edm": dist,
            "modes": {k: reflow.mode_stats(x, c, reflow.MODE_RADIUS) for k, x in samples.items()}}


def test_effects_add_mode_checks_with_their_basis() -> None:
    good = {k: eight_clusters(seed=i) for i, k in enumerate(
        ("reference", "heun9_uniform", "heun9_edm", "euler1"))}
    bad = {k: ring(seed=i) for i, k in enumerate(("reference", "heun9_uniform"))}
    mt = _metrics(bad, straight=1.4, sw1=1.3, var1=0.01, dist=0.05)
    ms = _metrics(good, straight=0.02, sw1=0.2, var1=0.9, dist=0.02)
    res = Result("reflow", "target")
    reflow.effects(res, "8gaussians_target_trained", mt, ms, basis="target_training")
    by = {c["name"]: c for c in res.checks}
    assert {c["basis"] for c in res.checks} == {"target_training"}
    failed = sorted(n for n, c in by.items() if not c["ok"])
    assert failed == [f"8gaussians_target_trained:teacher_{k}_{v}"
                      for k in ("heun9_uniform", "reference") for v in ("mode_mass", "off_mode")]
    assert "8gaussians_target_trained:student_euler1_mode_coverage" in by
    assert "8gaussians_target_trained:student_euler1_mode_mass" not in by  # one-step: no balance
    assert "8gaussians_target_trained:straightness_drop" in by


def test_no_mode_checks_for_a_dataset_without_modes() -> None:
    m = {"straightness": 1.0, "sw_euler1": 1.0, "var_ratio_euler1": 0.01,
         "dist_to_ref_heun9_uniform": 0.01, "dist_to_ref_heun9_edm": 0.01}
    res = Result("reflow", "host")
    reflow.effects(res, "moons", m, dict(m, straightness=0.01, sw_euler1=0.1),
                   basis="host_training")
    assert not [c for c in res.checks if "mode" in c["name"]]


def test_cosine_lr_decays_to_zero() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=0.01)
    sched = reflow.cosine_lr(opt, 10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[5] == pytest.approx(0.005)
    assert all(a > b for a, b in pairwise(lrs))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_window_means() -> None:
    assert reflow.window_means([1.0] * 5 + [3.0] * 5, 2) == [1.0, 3.0]
    assert reflow.window_means(list(range(23)), 10) == [0.5 + 2 * i for i in range(10)]
    assert reflow.window_means([1.0, 2.0], 10) == []


def _teacher_modes(cfg: dict[str, Any]) -> dict[str, bool]:
    teacher, _ = reflow.train_teacher("8gaussians", cfg, 1234)
    z = torch.randn(N, 2, generator=torch.Generator().manual_seed(1237))
    with torch.no_grad():
        x = reflow.heun(teacher, z, reflow.uniform_grid(5))
    return verdicts(x)


def test_the_reference_teacher_resolves_every_mode_and_the_old_recipe_was_a_ring() -> None:
    """The real training (about 10 s of CPU natively): the recipe in CFG gives 8 clusters at
    9 NFE; the old one (1500 constant-lr steps) gives the ring the mode checks fail."""
    torch.set_num_threads(1)
    assert _teacher_modes(dict(reflow.CFG)) == {"mode_coverage": True, "mode_mass": True,
                                                "off_mode": True}

    v = _teacher_modes(dict(reflow.CFG, teacher_steps=1500, teacher_lr=2e-3,
                            teacher_anneal=False))
    assert v["off_mode"] is False and v["mode_mass"] is False


def _run(tmp: Path, *args: str) -> tuple[int, dict[str, Any]]:
    out = tmp / f"out-{len(list(tmp.glob('out-*')))}.json"
    code = reflow.main([*args, "--data", str(tmp / "data"), "--out", str(out), "--quick"])
    return code, json.loads(out.read_text())


def test_host_then_target_full_end_to_end_at_quick_scale(tmp_path: Path) -> None:
    """Every path of the suite: the host trains and writes its references, the target samples
    the host's weights, replays the fine-tune and (--full) trains itself; each check says what
    it was computed from. Quick sizes prove nothing about the paper, so only the structure and
    the same-machine parity are asserted."""
    (tmp_path / "data").mkdir()
    _, host = _run(tmp_path, "--role", "host")
    assert host["info"]["trained_here"] is True
    assert {c.get("basis") for c in host["checks"]} == {"host_training"}
    assert (tmp_path / "data" / "reflow_8gaussians_host_samples.pt").exists()

    code, tgt = _run(tmp_path, "--role", "target", "--full")
    by = {c["name"]: c for c in tgt["checks"]}
    assert code == (0 if tgt["ok"] else 1)
    # Same machine, same weights: the host-weight samples and the replayed fine-tune match.
    assert by["8gaussians:teacher_reference_matches_host"]["ok"]
    assert by["8gaussians:student_heun9_edm_matches_host"]["ok"]
    assert by["8gaussians:finetune_losses_match_host"]["ok"]
    assert by["8gaussians:teacher_reference_matches_host"]["basis"] == "host_training"
    assert by["8gaussians:finetune_reduces_loss"]["basis"] == "target_finetune"
    # Same machine, same seeds: the target's own training is the host's, to the bit.
    assert by["8gaussians_target_trained:teacher_loss_curve_matches_host"]["ok"]
    assert by["8gaussians_target_trained:student_straightness_matches_host"]["ok"]
    own = tgt["info"]["checks_from_target_training"]
    assert own and all(n.startswith("8gaussians_target_trained:") for n in own)
    assert {by[n]["basis"] for n in own} == {"target_training"}
    assert "8gaussians_target_trained:teacher_reference_off_mode" in own
    assert "8gaussians_target_trained" in tgt["figures"]
    assert set(tgt["figures"]["8gaussians_target_trained"]) >= {"teacher", "student", "samples",
                                                                "modes"}

    code, plain = _run(tmp_path, "--role", "target")
    assert plain["info"]["checks_from_target_training"] == []
    assert not any(n.startswith("8gaussians_target_trained") for n in
                   (c["name"] for c in plain["checks"]))


def test_wrong_weights_fail_the_parity_checks(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    _run(tmp_path, "--role", "host")
    d = tmp_path / "data"
    (d / "reflow_8gaussians_student.pt").write_bytes((d / "reflow_8gaussians_teacher.pt")
                                                     .read_bytes())
    code, tgt = _run(tmp_path, "--role", "target")
    assert code == 1 and not tgt["ok"]
    failed = {c["name"] for c in tgt["checks"] if not c["ok"]}
    assert "8gaussians:student_reference_matches_host" in failed
    assert "8gaussians:teacher_reference_matches_host" not in failed


def _selftests() -> list[Any]:
    from rvtorch.validate import selftest

    return selftest.TESTS


@pytest.mark.parametrize("case", _selftests(), ids=lambda f: f.__name__)
def test_the_known_answer_selftests_natively(case: Any) -> None:
    """validate/selftest.py (run in the x86 reference rootfs by the emulated tier), here too."""
    case()
