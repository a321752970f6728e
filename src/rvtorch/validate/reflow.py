"""ReFlow suite: Simple ReFlow (Kim et al., ICLR 2025) at toy scale, on 2-D mixtures.

Conventions (rectified flow): x0 = data, x1 = N(0, I) noise, x_t = (1 - t) x0 + t x1, target
velocity x1 - x0; sampling integrates dx/dt = v(x, t) from t = 1 down to t = 0.

- Teacher (1-rectified flow): v trained on independent (data, noise) pairs, t ~ U(0, 1).
- Pairs: backward pairs (noise -> data through the teacher ODE) and forward pairs (data -> noise,
  the ODE run 0 -> 1, i.e. inversion), both solved accurately with many Heun steps.
- Student (2-rectified flow): initialised from the teacher, trained on the pairs with Simple
  ReFlow's toy-scale changes: each sample's loss divided by its own detached value, t drawn with
  density proportional to 10^t (t = log10(1 + 9u)), no dropout, forward + backward pairs.
- Samplers: Euler with 1 and 2 steps; Heun without the final correction (NFE = 2N - 1, 9 NFE =
  5 steps) on a uniform and an EDM grid (sigma_max 80, sigma_min 0.002, rho 7, t = s / (1 + s));
  a many-step Heun run is the reference.
- Metrics (pure torch): straightness, sliced Wasserstein (256 directions), RBF-MMD.

Role ``host`` trains teacher and student, writes their state_dicts, the fixed noise, held-out data,
a recorded fine-tune (batches + loss curve) and its own samples to ``--data``. Role ``target``
(default) loads those weights and noise, samples, and must match the host's samples and the
host's fine-tune loss curve within tolerance, and reproduce the paper's qualitative effects.
``--full`` makes the target train everything itself from the same seeds.
"""

from __future__ import annotations

import math
import os
from itertools import pairwise
from typing import Any

from .common import Result, atomic_torch_save, base_parser, run_suite, seed_all

DATASETS = ("8gaussians", "moons", "checkerboard")

# The toy-scale recipe. FACTS.md: width 64, 3 hidden layers, 1.5k teacher / 1k student Adam steps
# reproduce the paper's effects on 8 gaussians in well under a minute on x86.
CFG: dict[str, Any] = {
    "width": 64, "depth": 3, "fourier": 8, "lr": 2e-3, "batch": 256,
    "teacher_steps": 1500, "student_steps": 1000, "pairs": 8192, "pair_heun_steps": 64,
    "n_eval": 1000, "n_mmd": 500, "ref_heun_steps": 32, "straight_steps": 32, "sw_dirs": 256,
    "finetune_steps": 12, "loss_eps": 1e-3,
}
# Host-vs-target parity tolerances (fp32 MLP, x86 vs another ISA, same torch version or not).
SAMPLE_ATOL = 2e-3       # per coordinate, samples of magnitude ~3, after up to 99 NFE
METRIC_RTOL = 2e-2       # metrics on those samples
LOSS_RTOL = 2e-2         # fine-tune loss curve, step by step
# What must hold (VALIDATION.md, seen at toy scale on x86).
STRAIGHTNESS_DROP = 20.0
ONE_STEP_DROP = 3.0
COLLAPSE_VAR = 0.1
HEUN9_REL = 0.15         # mean |heun9(z) - reference(z)| / data std


# ---------------------------------------------------------------------------------------------
# data


def sample_data(name: str, n: int, gen: Any) -> Any:
    import torch

    if name == "8gaussians":
        k = torch.randint(0, 8, (n,), generator=gen)
        ang = k.to(torch.float32) * (2 * math.pi / 8)
        centers = 2.0 * torch.stack([torch.cos(ang), torch.sin(ang)], dim=1)
        return centers + 0.15 * torch.randn(n, 2, generator=gen)
    if name == "moons":
        u = torch.rand(n, generator=gen) * math.pi
        upper = torch.rand(n, generator=gen) < 0.5
        x = torch.where(upper, torch.cos(u), 1 - torch.cos(u))
        y = torch.where(upper, torch.sin(u), 0.5 - torch.sin(u))
        pts = torch.stack([x - 0.5, y - 0.25], dim=1) * 1.6
        return pts + 0.06 * torch.randn(n, 2, generator=gen)
    if name == "checkerboard":
        x1 = torch.rand(n, generator=gen) * 4 - 2
        x2 = torch.rand(n, generator=gen) - torch.randint(0, 2, (n,), generator=gen) * 2.0
        x2 = x2 + (torch.floor(x1) % 2)
        return torch.stack([x1, x2], dim=1) * 1.0
    raise ValueError(f"unknown dataset {name!r} (valid: {', '.join(DATASETS)})")


# ---------------------------------------------------------------------------------------------
# model


def make_model(cfg: dict[str, Any]) -> Any:
    import torch
    from torch import nn

    class Velocity(nn.Module):
        """MLP v(x, t) with Fourier features of t (fixed frequencies: nothing random to ship)."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("freqs", torch.arange(1, cfg["fourier"] + 1).float() * math.pi)
            layers: list[nn.Module] = []
            d = 2 + 2 * cfg["fourier"]
            for _ in range(cfg["depth"]):
                layers += [nn.Linear(d, cfg["width"]), nn.SiLU()]
                d = cfg["width"]
            layers.append(nn.Linear(d, 2))
            self.net = nn.Sequential(*layers)

        def forward(self, x: Any, t: Any) -> Any:
            tt = t.reshape(-1, 1) * self.freqs
            return self.net(torch.cat([x, torch.sin(tt), torch.cos(tt)], dim=1))

    return Velocity()


def velocity(model: Any, x: Any, t: float) -> Any:
    import torch

    return model(x, torch.full((x.shape[0],), float(t)))


# ---------------------------------------------------------------------------------------------
# samplers


def uniform_grid(steps: int) -> list[float]:
    return [1.0 - i / steps for i in range(steps + 1)]


def edm_grid(steps: int, smax: float = 80.0, smin: float = 0.002, rho: float = 7.0) -> list[float]:
    """EDM's sigma schedule mapped to rectified-flow time by t = sigma / (1 + sigma), then 0."""
    if steps == 1:
        sig = [smax]
    else:
        a, b = smax ** (1 / rho), smin ** (1 / rho)
        sig = [(a + i / (steps - 1) * (b - a)) ** rho for i in range(steps)]
    return [s / (1 + s) for s in sig] + [0.0]


def euler(model: Any, z: Any, grid: list[float]) -> Any:
    x = z * grid[0]
    for t, s in pairwise(grid):
        x = x + (s - t) * velocity(model, x, t)
    return x


def heun(model: Any, z: Any, grid: list[float]) -> Any:
    """Heun's 2nd order method without the correction on the last step: NFE = 2N - 1."""
    # x_t = (1 - t) x0 + t z: at t0 < 1 (EDM grid) the start is the scaled noise t0 * z.
    x = z * grid[0]
    for t, s in pairwise(grid):
        d = velocity(model, x, t)
        x_e = x + (s - t) * d
        if s > 0:
            x = x + (s - t) * 0.5 * (d + velocity(model, x_e, s))
        else:
            x = x_e
    return x


def heun_forward(model: Any, x0: Any, steps: int) -> Any:
    """Integrate the ODE from data (t = 0) to noise (t = 1): Simple ReFlow's forward pairs."""
    x = x0
    grid = [i / steps for i in range(steps + 1)]
    for t, s in pairwise(grid):
        d = velocity(model, x, t)
        x_e = x + (s - t) * d
        x = x + (s - t) * 0.5 * (d + velocity(model, x_e, s))
    return x


# ---------------------------------------------------------------------------------------------
# metrics (pure torch)


def straightness(model: Any, z: Any, steps: int) -> float:
    """S = E ∫ ||(x1 - x0) - v(x_t, t)||² dt along the model's own (Euler) trajectory."""
    import torch

    xs = [z]
    vs = []
    x = z
    grid = uniform_grid(steps)
    for t, s in pairwise(grid):
        v = velocity(model, x, t)
        vs.append(v)
        x = x + (s - t) * v
    chord = z - x  # x1 - x0 with x0 the trajectory's end
    dev = torch.stack([((chord - v) ** 2).sum(dim=1).mean() for v in vs])
    del xs
    return float(dev.mean())


def sliced_wasserstein(a: Any, b: Any, n_dirs: int, seed: int = 7) -> float:
    """Sliced 2-Wasserstein distance between two equally sized point sets."""
    import torch

    g = torch.Generator().manual_seed(seed)
    d = torch.randn(a.shape[1], n_dirs, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=0, keepdim=True)
    pa = torch.sort(a.double() @ d, dim=0).values
    pb = torch.sort(b.double() @ d, dim=0).values
    return float(((pa - pb) ** 2).mean().sqrt())


def rbf_mmd(a: Any, b: Any, bandwidths: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0)) -> float:
    """Biased RBF-kernel MMD (sum of kernels of several bandwidths), as a distance (sqrt)."""
    import torch

    a = a.double()
    b = b.double()

    def k(x: Any, y: Any) -> Any:
        d2 = torch.cdist(x, y) ** 2
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    mmd2 = k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()
    return float(mmd2.clamp_min(0).sqrt())


# ---------------------------------------------------------------------------------------------
# training


def log10_time(u: Any) -> Any:
    """t with density proportional to 10^t on [0, 1] (Simple ReFlow), by inverse CDF."""
    return torch_log10(1 + 9 * u)


def torch_log10(x: Any) -> Any:
    import torch

    return torch.log10(x)


def flow_loss(model: Any, x0: Any, x1: Any, t: Any, *, normalise: bool,
              eps: float) -> tuple[Any, Any]:
    """(loss to optimise, plain MSE for reporting) for a batch of (data, noise, time)."""
    tt = t.reshape(-1, 1)
    xt = (1 - tt) * x0 + tt * x1
    per = ((model(xt, t) - (x1 - x0)) ** 2).sum(dim=1)
    mse = per.mean()
    if normalise:
        return (per / (per.detach() + eps)).mean(), mse
    return mse, mse


def train_teacher(name: str, cfg: dict[str, Any], seed: int) -> tuple[Any, list[float]]:
    import torch

    seed_all(seed)
    g = torch.Generator().manual_seed(seed)
    model = make_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    losses = []
    for _ in range(cfg["teacher_steps"]):
        x0 = sample_data(name, cfg["batch"], g)
        x1 = torch.randn(cfg["batch"], 2, generator=g)
        t = torch.rand(cfg["batch"], generator=g)
        loss, mse = flow_loss(model, x0, x1, t, normalise=False, eps=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(mse.detach()))
    return model, losses


def make_pairs(teacher: Any, name: str, cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """Backward pairs (noise -> data) and forward pairs (data -> noise) from the teacher ODE."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    n = cfg["pairs"]
    with torch.no_grad():
        z = torch.randn(n, 2, generator=g)
        x_b = heun(teacher, z, uniform_grid(cfg["pair_heun_steps"]))
        x_f = sample_data(name, n, g)
        z_f = heun_forward(teacher, x_f, cfg["pair_heun_steps"])
    return {"x0": torch.cat([x_b, x_f]), "x1": torch.cat([z, z_f]),
            "backward": n, "forward": n}


def finetune_batches(pairs: dict[str, Any], cfg: dict[str, Any], steps: int,
                     seed: int) -> dict[str, Any]:
    """The batches of a student run drawn up front: indices into the pairs and times."""
    import torch

    g = torch.Generator().manual_seed(seed + 2)
    total = pairs["x0"].shape[0]
    idx = torch.randint(0, total, (steps, cfg["batch"]), generator=g)
    t = log10_time(torch.rand(steps, cfg["batch"], generator=g))
    return {"idx": idx, "t": t}


def train_student(teacher: Any, pairs: dict[str, Any], batches: dict[str, Any],
                  cfg: dict[str, Any]) -> tuple[Any, list[float]]:
    import torch

    model = make_model(cfg)
    model.load_state_dict(teacher.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    losses = []
    for idx, t in zip(batches["idx"], batches["t"], strict=True):
        loss, mse = flow_loss(model, pairs["x0"][idx], pairs["x1"][idx], t, normalise=True,
                              eps=cfg["loss_eps"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(mse.detach()))
    return model, losses


# ---------------------------------------------------------------------------------------------
# evaluation


def sample_all(model: Any, z: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    with torch.no_grad():
        return {
            "euler1": euler(model, z, uniform_grid(1)),
            "euler2": euler(model, z, uniform_grid(2)),
            "heun9_uniform": heun(model, z, uniform_grid(5)),
            "heun9_edm": heun(model, z, edm_grid(5)),
            "reference": heun(model, z, uniform_grid(cfg["ref_heun_steps"])),
        }


def metrics(model: Any, samples: dict[str, Any], z: Any, held: Any,
            cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    std = float(held.std(dim=0).mean())
    with torch.no_grad():
        out: dict[str, Any] = {"straightness": straightness(model, z, cfg["straight_steps"])}
    for key, x in samples.items():
        out[f"sw_{key}"] = sliced_wasserstein(x, held, cfg["sw_dirs"])
        # MMD is O(n^2): on a subset, to keep the target's share of a QEMU run small.
        out[f"mmd_{key}"] = rbf_mmd(x[: cfg["n_mmd"]], held[: cfg["n_mmd"]])
        if key != "reference":
            out[f"dist_to_ref_{key}"] = float((x - samples["reference"]).norm(dim=1).mean()) / std
    out["var_ratio_euler1"] = float(samples["euler1"].var(dim=0).sum() / held.var(dim=0).sum())
    out["data_std"] = std
    return out


def effects(res: Result, name: str, mt: dict[str, Any], ms: dict[str, Any]) -> None:
    """The paper's qualitative effects, checked on whichever side ran them."""
    s_drop = mt["straightness"] / max(ms["straightness"], 1e-12)
    e_drop = mt["sw_euler1"] / max(ms["sw_euler1"], 1e-12)
    res.figures.setdefault("effects", {})[name] = {"straightness_drop": s_drop,
                                                   "one_step_error_drop": e_drop}
    res.check(f"{name}:straightness_drop", s_drop > STRAIGHTNESS_DROP, value=s_drop,
              expected=f"> {STRAIGHTNESS_DROP}",
              detail=f"teacher {mt['straightness']:.4g} -> student {ms['straightness']:.4g}")
    res.check(f"{name}:one_step_error_drop", e_drop > ONE_STEP_DROP, value=e_drop,
              expected=f"> {ONE_STEP_DROP}",
              detail=f"1-step sliced W teacher {mt['sw_euler1']:.4g} -> {ms['sw_euler1']:.4g}")
    res.check(f"{name}:teacher_one_step_collapse", mt["var_ratio_euler1"] < COLLAPSE_VAR,
              value=mt["var_ratio_euler1"], expected=f"< {COLLAPSE_VAR}")
    # The teacher's curved paths on the EDM grid (one big step from t 0.71 to 0.15) are not
    # expected to be close; the straight student's are, on both grids.
    for who, m, grids in (("teacher", mt, ("uniform",)), ("student", ms, ("uniform", "edm"))):
        for grid in grids:
            d = m[f"dist_to_ref_heun9_{grid}"]
            res.check(f"{name}:{who}_heun9_{grid}_near_reference", d < HEUN9_REL, value=d,
                      expected=f"< {HEUN9_REL}",
                      detail="9-NFE Heun is far from the many-step reference")


def _points(x: Any, n: int = 400) -> list[list[float]]:
    return [[round(a, 4), round(b, 4)] for a, b in x[:n].tolist()]


def files(data: str, name: str) -> dict[str, str]:
    return {k: os.path.join(data, f"reflow_{name}_{k}.pt")
            for k in ("teacher", "student", "fixed", "host_samples")}


def body(args: Any, res: Result) -> None:
    import torch

    cfg = dict(CFG)
    if args.quick:  # unit-test scale: exercises every path, proves nothing about the paper
        cfg.update(teacher_steps=200, student_steps=100, pairs=1024, n_eval=256, n_mmd=128,
                   ref_heun_steps=10, straight_steps=16, finetune_steps=5)
    res.info["config"] = cfg
    for name in args.datasets.split(","):
        run_dataset(args, res, name, cfg, torch)


def run_dataset(args: Any, res: Result, name: str, cfg: dict[str, Any], torch: Any) -> None:
    seed = args.seed + DATASETS.index(name) * 1000
    f = files(args.data, name)
    fig = res.figures.setdefault(name, {})
    train_here = args.role == "host" or args.full
    if train_here:
        with res.timed(f"{name}:train_teacher_s"):
            teacher, t_losses = train_teacher(name, cfg, seed)
        with res.timed(f"{name}:pairs_s"):
            pairs = make_pairs(teacher, name, cfg, seed)
        batches = finetune_batches(pairs, cfg, cfg["student_steps"], seed)
        with res.timed(f"{name}:train_student_s"):
            student, s_losses = train_student(teacher, pairs, batches, cfg)
        fig["teacher_loss"] = t_losses[:: max(1, len(t_losses) // 100)]
        fig["student_loss"] = s_losses[:: max(1, len(s_losses) // 100)]
    if args.role == "host":
        g = torch.Generator().manual_seed(seed + 3)
        z = torch.randn(cfg["n_eval"], 2, generator=g)
        held = sample_data(name, cfg["n_eval"], g)
        # The recorded fine-tune the target replays: a few student steps from the teacher.
        ft = {"x0": pairs["x0"], "x1": pairs["x1"],
              **finetune_batches(pairs, cfg, cfg["finetune_steps"], seed + 10)}
        _, ft_losses = train_student(teacher, ft, ft, cfg)
        finetune_falls(res, name, ft_losses)
        atomic_torch_save(teacher.state_dict(), f["teacher"])
        atomic_torch_save(student.state_dict(), f["student"])
        atomic_torch_save({"z": z, "held": held, "finetune": ft,
                           "finetune_losses": torch.tensor(ft_losses)}, f["fixed"])
    else:
        fixed = torch.load(f["fixed"], weights_only=True)
        z, held = fixed["z"], fixed["held"]
        if not train_here:
            teacher = make_model(cfg)
            student = make_model(cfg)
            teacher.load_state_dict(torch.load(f["teacher"], weights_only=True))
            student.load_state_dict(torch.load(f["student"], weights_only=True))
    with res.timed(f"{name}:sample_s"):
        st = sample_all(teacher, z, cfg)
        ss = sample_all(student, z, cfg)
    with res.timed(f"{name}:metrics_s"):
        mt = metrics(teacher, st, z, held, cfg)
        ms = metrics(student, ss, z, held, cfg)
    fig["teacher"] = mt
    fig["student"] = ms
    fig["samples"] = {"data": _points(held),
                      **{f"teacher_{k}": _points(v) for k, v in st.items()},
                      **{f"student_{k}": _points(v) for k, v in ss.items()}}
    effects(res, name, mt, ms)
    if args.role == "host":
        atomic_torch_save({"teacher": st, "student": ss, "teacher_metrics": mt,
                           "student_metrics": ms}, f["host_samples"])
        return
    host = torch.load(f["host_samples"], weights_only=True)
    if not args.full:
        # Same weights, same noise: the target's samples are the host's within tolerance.
        for who, mine in (("teacher", st), ("student", ss)):
            for key, x in mine.items():
                res.check_close(f"{name}:{who}_{key}_matches_host", x, host[who][key],
                                rtol=0.0, atol=SAMPLE_ATOL)
    for who, m in (("teacher", mt), ("student", ms)):
        hm = host[f"{who}_metrics"]
        # Trained on the target (--full), only the figures can be compared, loosely.
        rtol = METRIC_RTOL if not args.full else 0.5
        for key in ("straightness", "sw_euler1", "sw_heun9_uniform", "mmd_reference"):
            ok = abs(m[key] - hm[key]) <= rtol * abs(hm[key]) + 1e-4
            res.check(f"{name}:{who}_{key}_matches_host", ok, value=m[key], expected=hm[key],
                      tol={"rtol": rtol, "atol": 1e-4})
    # A few training steps on the target reduce the loss as on the host.
    ft = fixed["finetune"]
    with res.timed(f"{name}:finetune_s"):
        _, losses = train_student(teacher if not args.full else _load_teacher(f, cfg, torch),
                                  ft, ft, cfg)
    host_losses = fixed["finetune_losses"].tolist()
    fig["finetune_losses"] = {"target": losses, "host": host_losses}
    finetune_falls(res, name, losses)
    ok = len(losses) == len(host_losses) and all(
        abs(a - b) <= LOSS_RTOL * abs(b) + 1e-5 for a, b in zip(losses, host_losses, strict=True))
    res.check(f"{name}:finetune_losses_match_host", ok,
              value=losses, expected=host_losses, tol={"rtol": LOSS_RTOL})


def finetune_falls(res: Result, name: str, losses: list[float]) -> None:
    k = max(1, len(losses) // 4)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    res.check(f"{name}:finetune_reduces_loss", last < 0.8 * first, value=[first, last],
              detail=f"loss {first:.4g} -> {last:.4g}")


def _load_teacher(f: dict[str, str], cfg: dict[str, Any], torch: Any) -> Any:
    """The host's teacher: a recorded fine-tune must start from the weights it was recorded on."""
    m = make_model(cfg)
    m.load_state_dict(torch.load(f["teacher"], weights_only=True))
    return m


def main(argv: list[str] | None = None) -> int:
    p = base_parser("reflow", __doc__ or "")
    p.add_argument("--datasets", default="8gaussians", help=f"comma list of {', '.join(DATASETS)}")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--full", action="store_true", help="train teacher and student on this side too")
    p.add_argument("--quick", action="store_true", help="tiny sizes for testing the code paths")
    return run_suite("reflow", body, p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
