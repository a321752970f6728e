"""Self-tests of the suites' building blocks on inputs with known answers (torch + stdlib).

``python -m rvtorch_validate.selftest`` prints one line per test and exits 1 if any fails. The
project's pytest runs these in the x86 reference rootfs (and directly where torch is installed):
the metrics must be right before a host-vs-target comparison of them means anything.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from itertools import pairwise

from . import reflow
from .common import close_report


def _near(a: float, b: float, rel: float, abs_: float = 0.0) -> bool:
    return abs(a - b) <= rel * abs(b) + abs_


class _Const:
    """v(x, t) = c: straight paths; counts its evaluations."""

    def __init__(self, c: tuple[float, float]) -> None:
        self.c = c
        self.calls = 0

    def __call__(self, x, t):  # type: ignore[no-untyped-def]
        import torch

        self.calls += 1
        return torch.tensor(self.c).expand_as(x)


class _Linear:
    """v(x, t) = x: the ODE dx/dt = x has the curved solution x(t) = z e^(t - 1)."""

    def __call__(self, x, t):  # type: ignore[no-untyped-def]
        return x


def test_sliced_wasserstein_identical_is_zero() -> None:
    import torch

    a = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    assert reflow.sliced_wasserstein(a, a.clone(), 256) == 0.0


def test_sliced_wasserstein_of_a_shift() -> None:
    import torch

    # Shifting a set by c moves every projection by c.d: SW2 = sqrt(mean_d (c.d)^2),
    # which for directions uniform on the circle tends to |c| / sqrt(2).
    a = torch.randn(400, 2, generator=torch.Generator().manual_seed(1))
    sw = reflow.sliced_wasserstein(a, a + torch.tensor([3.0, 0.0]), 4096)
    assert _near(sw, 3.0 / math.sqrt(2), 0.03), sw


def test_mmd_identical_zero_and_far_apart() -> None:
    import torch

    a = torch.zeros(50, 2)
    assert reflow.rbf_mmd(a, a.clone()) < 1e-6
    # Two point masses far apart: k(a,a) = k(b,b) = number of bandwidths, k(a,b) = 0.
    far = reflow.rbf_mmd(a, a + 1000.0)
    assert _near(far, math.sqrt(2 * 4), 1e-9), far


def test_straightness_of_straight_and_curved_flows() -> None:
    import torch

    z = torch.randn(300, 2, generator=torch.Generator().manual_seed(2))
    assert reflow.straightness(_Const((0.5, -1.0)), z, 32) < 1e-10
    # dx/dt = x: chord z(1 - 1/e), v(x_t) = z e^(t-1); S = E|z|^2 ∫(1 - 1/e - e^(t-1))^2 dt.
    e1 = math.exp(-1)
    integral = (1 - e1) ** 2 - 2 * (1 - e1) * (1 - e1) + (1 - math.exp(-2)) / 2
    expected = float((z ** 2).sum(dim=1).mean()) * integral
    got = reflow.straightness(_Linear(), z, 2000)
    assert _near(got, expected, 0.01), (got, expected)


def test_samplers_exact_on_constant_velocity_and_nfe() -> None:
    import torch

    z = torch.randn(10, 2, generator=torch.Generator().manual_seed(3))
    for steps in (1, 2, 7):
        m = _Const((1.0, 2.0))
        x = reflow.euler(m, z, reflow.uniform_grid(steps))
        assert torch.allclose(x, z - torch.tensor([1.0, 2.0]), atol=1e-6)
        assert m.calls == steps
    m = _Const((1.0, 2.0))
    x = reflow.heun(m, z, reflow.uniform_grid(5))
    assert m.calls == 9, m.calls  # Heun without the last correction: NFE = 2N - 1
    assert torch.allclose(x, z - torch.tensor([1.0, 2.0]), atol=1e-6)
    m = _Const((0.0, 0.0))
    grid = reflow.edm_grid(5)
    reflow.heun(m, z, grid)
    assert m.calls == 9


def test_edm_grid() -> None:
    g = reflow.edm_grid(5)
    assert len(g) == 6 and g[-1] == 0.0
    assert _near(g[0], 80 / 81, 1e-12) and _near(g[-2], 0.002 / 1.002, 1e-9)
    assert all(a > b for a, b in pairwise(g))
    u = reflow.uniform_grid(4)
    assert u == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_log10_time_distribution() -> None:
    import torch

    u = torch.rand(200_000, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    t = reflow.log10_time(u)
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    # density ln(10) 10^t / 9 on [0, 1]: E[t] = (10 ln10 - 9) / (9 ln10)
    ln10 = math.log(10)
    mean = (10 * ln10 - 9) / (9 * ln10)
    assert _near(float(t.mean()), mean, 0.005), float(t.mean())


def test_normalised_loss_is_one_per_sample() -> None:
    import torch

    m = reflow.make_model(reflow.CFG)
    g = torch.Generator().manual_seed(5)
    x0, x1 = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    t = torch.rand(64, generator=g)
    loss, mse = reflow.flow_loss(m, x0, x1, t, normalise=True, eps=0.0)
    assert _near(float(loss.detach()), 1.0, 1e-6) and float(mse.detach()) > 0


def _mode_verdicts(x, one_step: bool = False) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    stats = reflow.mode_stats(x, reflow.gaussian_centers(), reflow.MODE_RADIUS)
    return {k: v["ok"] for k, v in reflow.mode_verdicts(stats, one_step=one_step).items()}


def test_mode_checks_pass_eight_clusters_and_fail_a_ring() -> None:
    import torch

    g = torch.Generator().manual_seed(6)
    good = reflow.sample_data("8gaussians", 1000, g)
    assert _mode_verdicts(good) == {"mode_coverage": True, "mode_mass": True, "off_mode": True}
    # A ring through the modes (what an under-trained teacher draws): every mode is touched,
    # but ~43% of the mass lies between them and each holds ~7% instead of 12.5%.
    ang = torch.rand(1000, generator=g) * 2 * math.pi
    r = reflow.GAUSS_RADIUS + reflow.GAUSS_STD * torch.randn(1000, generator=g)
    ring = torch.stack([r * torch.cos(ang), r * torch.sin(ang)], dim=1)
    assert _mode_verdicts(ring) == {"mode_coverage": True, "mode_mass": False,
                                    "off_mode": False}
    assert not _mode_verdicts(ring, one_step=True)["off_mode"]
    # A dropped mode fails coverage.
    c = reflow.gaussian_centers().float()
    moved = good.clone()
    near = (moved - c[2]).norm(dim=1) < 1.0
    moved[near] = moved[near] - c[2] + c[5]
    assert not _mode_verdicts(moved)["mode_coverage"]


def test_close_report_tolerances() -> None:
    assert close_report([1.0, 2.0], [1.0, 2.0 + 1e-7], rtol=1e-6, atol=0.0)["ok"]
    bad = close_report([1.0, 2.5], [1.0, 2.0], rtol=1e-3, atol=1e-3)
    assert not bad["ok"] and bad["worst_index"] == 1


TESTS: list[Callable[[], None]] = [v for k, v in sorted(globals().items())
                                   if k.startswith("test_") and callable(v)]


def main() -> int:
    failed = 0
    for test in TESTS:
        try:
            test()
            print(f"ok   {test.__name__}")
        except Exception as exc:
            failed += 1
            print(f"FAIL {test.__name__}: {type(exc).__name__}: {exc}")
    print(f"{len(TESTS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
