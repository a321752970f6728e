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

- Mode checks (8 gaussians): every sample is assigned to its nearest mode if within 3 data
  standard deviations; every mode must get samples, each must hold 1/8 of them within a
  tolerance, and the off-mode mass is bounded. Sliced W on 1000 points cannot tell 8 clusters
  from a ring through them (the ring's distance to the data is within the spread of two data
  sets' own), and no threshold was set on MMD; these checks fail a ring by construction.

Role ``host`` trains teacher and student, writes their state_dicts, the fixed noise, held-out
data, a recorded fine-tune (batches + loss curve), its training loss curves and its own samples
to ``--data``. Role ``target`` (default) loads those weights and noise, samples, and must match
the host's samples, metrics and fine-tune loss curve within tolerance; the paper's effects and
the mode checks are evaluated on the host-trained weights (``basis: host_training``).
``--full`` adds the target's own training: teacher, pairs and student from the same seeds and
config, every effect and mode check again on those weights (``<dataset>_target_trained:...``,
``basis: target_training``), and its loss curves and metrics against the host's.
"""

from __future__ import annotations

import math
import os
from itertools import pairwise
from typing import Any

from .common import Result, atomic_torch_save, base_parser, run_suite, seed_all

DATASETS = ("8gaussians", "moons", "checkerboard")

# The toy-scale recipe (docs/validation.md, "reflow"). A width-64 x 3 MLP; the teacher gets 6000
# Adam steps at lr 5e-3 with cosine decay: 1500 constant-lr steps (the old recipe) leave the
# 8 gaussians as a ring through the modes (40% of the samples off-mode); 6000 annealed steps
# put 95% on a mode, each holding 1/8 +- 0.02, for about 8 s of x86 CPU. The student (1000
# steps, cosine decay) starts from the teacher. Host and --full target run exactly this.
CFG: dict[str, Any] = {
    "width": 64, "depth": 3, "fourier": 8, "teacher_lr": 5e-3, "lr": 2e-3, "batch": 256,
    "teacher_steps": 6000, "teacher_anneal": True, "student_steps": 1000, "pairs": 8192,
    "pair_heun_steps": 64,
    "n_eval": 1000, "n_mmd": 500, "ref_heun_steps": 32, "straight_steps": 32, "sw_dirs": 256,
    "finetune_steps": 12, "loss_eps": 1e-3,
}
# Host-vs-target parity tolerances (fp32 MLP, x86 vs another ISA, same torch version or not).
SAMPLE_ATOL = 2e-3       # per coordinate, samples of magnitude ~3, after up to 99 NFE
METRIC_RTOL = 2e-2       # metrics on those samples
LOSS_RTOL = 2e-2         # fine-tune loss curve, step by step
# What must hold (docs/validation.md, the ReFlow section; seen at toy scale on x86).
STRAIGHTNESS_DROP = 20.0
ONE_STEP_DROP = 3.0
COLLAPSE_VAR = 0.1
HEUN9_REL = 0.15         # mean |heun9(z) - reference(z)| / data std
# Mode checks (8 gaussians: radius 2, std 0.15). A sample belongs to its nearest mode if it lies
# within 3 std of it (98.9% of the data does). With 1000 samples a mode's share has a standard
# deviation of 0.0105, so +-0.04 is ~4 sigma for a sampler that is right. A ring through the
# modes puts ~43% of its samples off-mode and ~0.07 on each: it fails both bounds.
GAUSS_RADIUS = 2.0
GAUSS_STD = 0.15
MODE_RADIUS = 3 * GAUSS_STD
MODE_MASS_TOL = 0.04     # |share of mode k - 1/8|, shares of all samples
OFF_MODE_MAX = 0.10      # many-step / 9-NFE samplers
COVERAGE_MIN = 1 / 32    # every mode holds at least a quarter of its share
# The student's one Euler step is blurrier (its 1-step error is what ReFlow reduces, not
# removes): it must cover every mode and keep most mass on them, but no balance is asked.
ONE_STEP_OFF_MODE_MAX = 0.35
# --full: the target's own training against the host's (same seeds; float differences between
# ISAs change the trajectory of thousands of Adam steps, not its statistics).
FULL_METRIC_RTOL = 0.5
FULL_LOSS_RTOL = 0.1     # loss curves compared as means over LOSS_WINDOWS windows
LOSS_WINDOWS = 10


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


def gaussian_centers() -> Any:
    """The 8 modes of the ``8gaussians`` data (float64)."""
    import torch

    ang = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return GAUSS_RADIUS * torch.stack([torch.cos(ang), torch.sin(ang)], dim=1)


def mode_stats(x: Any, centers: Any, radius: float) -> dict[str, Any]:
    """Each sample goes to its nearest centre if within ``radius``, else off-mode.

    Returns ``mass``: per mode, the share of ALL samples it holds (a perfect sampler gives
    1/K each), ``off_mode``: the share on no mode, and ``n``.
    """
    import torch

    d = torch.cdist(x.detach().double(), centers.double())
    dist, idx = d.min(dim=1)
    on = dist <= radius
    n = int(x.shape[0])
    counts = torch.bincount(idx[on], minlength=int(centers.shape[0]))
    return {"mass": [float(c) / n for c in counts.tolist()],
            "off_mode": 1.0 - float(on.sum()) / n, "n": n}


def mode_verdicts(stats: dict[str, Any], *, one_step: bool = False) -> dict[str, dict[str, Any]]:
    """The mode checks on :func:`mode_stats`: name -> {ok, value, expected}.

    ``mode_coverage``: every mode gets samples (>= COVERAGE_MIN); ``mode_mass``: each mode holds
    1/K +- MODE_MASS_TOL of all samples (not for ``one_step``); ``off_mode``: bounded mass off
    every mode (OFF_MODE_MAX, or ONE_STEP_OFF_MODE_MAX for ``one_step``).
    """
    mass = stats["mass"]
    share = 1.0 / len(mass)
    out = {"mode_coverage": {"ok": min(mass) >= COVERAGE_MIN, "value": min(mass),
                             "expected": f">= {COVERAGE_MIN:.4g} on every mode"}}
    if not one_step:
        err = max(abs(m - share) for m in mass)
        out["mode_mass"] = {"ok": err <= MODE_MASS_TOL, "value": err,
                            "expected": f"|share - {share:.4g}| <= {MODE_MASS_TOL}"}
    bound = ONE_STEP_OFF_MODE_MAX if one_step else OFF_MODE_MAX
    out["off_mode"] = {"ok": stats["off_mode"] <= bound, "value": stats["off_mode"],
                       "expected": f"<= {bound}"}
    return out


# Which samples get the mode checks: (model, sampler, one_step). The teacher's 1- and 2-step
# samples collapse by design and its EDM-grid run takes one big step from t 0.71 (see
# ``effects``); the 2-step Euler runs are between the checked ones.
MODE_CHECKED = (("teacher", "reference", False), ("teacher", "heun9_uniform", False),
                ("student", "reference", False), ("student", "heun9_uniform", False),
                ("student", "heun9_edm", False), ("student", "euler1", True))


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


def cosine_lr(opt: Any, steps: int) -> Any:
    """Cosine decay of the learning rate to 0 over ``steps`` optimiser steps.

    A constant-lr Adam run ends on a noisy iterate: at toy scale the teacher's velocity field
    then blurs the 8 modes into a ring. Annealing the step size lets the last steps settle the
    fine structure (the sharp field near t = 0 that separates the modes).
    """
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1.0 + math.cos(math.pi * min(i, steps) / steps)))


def train_teacher(name: str, cfg: dict[str, Any], seed: int) -> tuple[Any, list[float]]:
    import torch

    seed_all(seed)
    g = torch.Generator().manual_seed(seed)
    model = make_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["teacher_lr"])
    sched = cosine_lr(opt, cfg["teacher_steps"]) if cfg["teacher_anneal"] else None
    losses = []
    for _ in range(cfg["teacher_steps"]):
        x0 = sample_data(name, cfg["batch"], g)
        x1 = torch.randn(cfg["batch"], 2, generator=g)
        t = torch.rand(cfg["batch"], generator=g)
        loss, mse = flow_loss(model, x0, x1, t, normalise=False, eps=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
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
                  cfg: dict[str, Any], *, anneal: bool = True) -> tuple[Any, list[float]]:
    """The 2-rectified flow, from the teacher's weights; ``anneal``: cosine lr decay (the
    short recorded fine-tune keeps a constant lr so its loss curve shows the first steps)."""
    import torch

    model = make_model(cfg)
    model.load_state_dict(teacher.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    sched = cosine_lr(opt, len(batches["idx"])) if anneal else None
    losses = []
    for idx, t in zip(batches["idx"], batches["t"], strict=True):
        loss, mse = flow_loss(model, pairs["x0"][idx], pairs["x1"][idx], t, normalise=True,
                              eps=cfg["loss_eps"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
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


def effects(res: Result, name: str, mt: dict[str, Any], ms: dict[str, Any], *,
            basis: str) -> None:
    """The paper's qualitative effects and the mode checks, on whichever side ran them."""
    s_drop = mt["straightness"] / max(ms["straightness"], 1e-12)
    e_drop = mt["sw_euler1"] / max(ms["sw_euler1"], 1e-12)
    res.figures.setdefault("effects", {})[name] = {"straightness_drop": s_drop,
                                                   "one_step_error_drop": e_drop}
    res.check(f"{name}:straightness_drop", s_drop > STRAIGHTNESS_DROP, value=s_drop,
              expected=f"> {STRAIGHTNESS_DROP}", basis=basis,
              detail=f"teacher {mt['straightness']:.4g} -> student {ms['straightness']:.4g}")
    res.check(f"{name}:one_step_error_drop", e_drop > ONE_STEP_DROP, value=e_drop,
              expected=f"> {ONE_STEP_DROP}", basis=basis,
              detail=f"1-step sliced W teacher {mt['sw_euler1']:.4g} -> {ms['sw_euler1']:.4g}")
    res.check(f"{name}:teacher_one_step_collapse", mt["var_ratio_euler1"] < COLLAPSE_VAR,
              value=mt["var_ratio_euler1"], expected=f"< {COLLAPSE_VAR}", basis=basis)
    # The teacher's curved paths on the EDM grid (one big step from t 0.71 to 0.15) are not
    # expected to be close; the straight student's are, on both grids.
    for who, m, grids in (("teacher", mt, ("uniform",)), ("student", ms, ("uniform", "edm"))):
        for grid in grids:
            d = m[f"dist_to_ref_heun9_{grid}"]
            res.check(f"{name}:{who}_heun9_{grid}_near_reference", d < HEUN9_REL, value=d,
                      expected=f"< {HEUN9_REL}", basis=basis,
                      detail="9-NFE Heun is far from the many-step reference")
    for who, key, one_step in MODE_CHECKED:
        m = mt if who == "teacher" else ms
        stats = m.get("modes", {}).get(key)
        if stats is None:  # a dataset without discrete modes
            continue
        for check, v in mode_verdicts(stats, one_step=one_step).items():
            res.check(f"{name}:{who}_{key}_{check}", v["ok"], value=v["value"],
                      expected=v["expected"], basis=basis,
                      detail=f"per-mode shares {[round(x, 3) for x in stats['mass']]}, "
                             f"off-mode {stats['off_mode']:.3f}")


def _points(x: Any, n: int = 400) -> list[list[float]]:
    return [[round(a, 4), round(b, 4)] for a, b in x[:n].tolist()]


def files(data: str, name: str) -> dict[str, str]:
    return {k: os.path.join(data, f"reflow_{name}_{k}.pt")
            for k in ("teacher", "student", "fixed", "host_samples")}


QUICK = {"teacher_steps": 200, "student_steps": 100, "pairs": 1024, "n_eval": 256, "n_mmd": 128,
         "ref_heun_steps": 10, "straight_steps": 16, "finetune_steps": 5}


def body(args: Any, res: Result) -> None:
    import torch

    cfg = dict(CFG)
    if args.quick:  # unit-test scale: exercises every path, proves nothing about the paper
        cfg.update(QUICK)
    res.info["config"] = cfg
    res.info["full"] = bool(args.full)
    for name in args.datasets.split(","):
        run_dataset(args, res, name, cfg, torch)
    # Which checks rest on weights this process trained itself (report.json states it).
    res.info["trained_here"] = args.role == "host" or bool(args.full)
    res.info["checks_from_target_training"] = [
        c["name"] for c in res.checks if c.get("basis") == "target_training"]


def train_all(res: Result, tag: str, name: str, cfg: dict[str, Any],
              seed: int) -> dict[str, Any]:
    """Teacher, pairs and student from ``seed``: what the host does, and the target with --full."""
    with res.timed(f"{tag}:train_teacher_s"):
        teacher, t_losses = train_teacher(name, cfg, seed)
    with res.timed(f"{tag}:pairs_s"):
        pairs = make_pairs(teacher, name, cfg, seed)
    batches = finetune_batches(pairs, cfg, cfg["student_steps"], seed)
    with res.timed(f"{tag}:train_student_s"):
        student, s_losses = train_student(teacher, pairs, batches, cfg)
    return {"teacher": teacher, "student": student, "pairs": pairs,
            "teacher_loss": t_losses, "student_loss": s_losses}


def evaluate(res: Result, tag: str, name: str, teacher: Any, student: Any, z: Any, held: Any,
             cfg: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """Samples of both models from the fixed noise, and their metrics (and modes)."""
    with res.timed(f"{tag}:sample_s"):
        st = sample_all(teacher, z, cfg)
        ss = sample_all(student, z, cfg)
    with res.timed(f"{tag}:metrics_s"):
        mt = metrics(teacher, st, z, held, cfg)
        ms = metrics(student, ss, z, held, cfg)
    if name == "8gaussians":
        centers = gaussian_centers()
        for m, samples in ((mt, st), (ms, ss)):
            m["modes"] = {k: mode_stats(x, centers, MODE_RADIUS) for k, x in samples.items()}
            for k, v in m["modes"].items():
                m[f"off_mode_{k}"] = v["off_mode"]
    return st, ss, mt, ms


def window_means(losses: list[float], windows: int = LOSS_WINDOWS) -> list[float]:
    """Means of ``windows`` consecutive equal slices of a loss curve (a long tail is dropped)."""
    k = len(losses) // windows
    if k == 0:
        return []
    return [sum(losses[i * k:(i + 1) * k]) / k for i in range(windows)]


def figures_of(mt: dict[str, Any], ms: dict[str, Any], st: dict[str, Any], ss: dict[str, Any],
               held: Any) -> dict[str, Any]:
    """The figures of one (teacher, student) evaluation; per-mode shares apart from the metric
    table (which holds one number per metric)."""
    return {"teacher": {k: v for k, v in mt.items() if k != "modes"},
            "student": {k: v for k, v in ms.items() if k != "modes"},
            "modes": {"teacher": mt.get("modes"), "student": ms.get("modes")},
            "samples": {"data": _points(held),
                        **{f"teacher_{k}": _points(v) for k, v in st.items()},
                        **{f"student_{k}": _points(v) for k, v in ss.items()}}}


def run_dataset(args: Any, res: Result, name: str, cfg: dict[str, Any], torch: Any) -> None:
    seed = args.seed + DATASETS.index(name) * 1000
    f = files(args.data, name)
    if args.role == "host":
        run_host(res, name, cfg, seed, f, torch)
    else:
        run_target(args, res, name, cfg, seed, f, torch)


def run_host(res: Result, name: str, cfg: dict[str, Any], seed: int, f: dict[str, str],
             torch: Any) -> None:
    tr = train_all(res, name, name, cfg, seed)
    teacher, student = tr["teacher"], tr["student"]
    g = torch.Generator().manual_seed(seed + 3)
    z = torch.randn(cfg["n_eval"], 2, generator=g)
    held = sample_data(name, cfg["n_eval"], g)
    # The recorded fine-tune the target replays: a few student steps from the teacher.
    ft = {"x0": tr["pairs"]["x0"], "x1": tr["pairs"]["x1"],
          **finetune_batches(tr["pairs"], cfg, cfg["finetune_steps"], seed + 10)}
    _, ft_losses = train_student(teacher, ft, ft, cfg, anneal=False)
    finetune_falls(res, name, ft_losses, basis="host_training")
    atomic_torch_save(teacher.state_dict(), f["teacher"])
    atomic_torch_save(student.state_dict(), f["student"])
    atomic_torch_save({"z": z, "held": held, "finetune": ft,
                       "finetune_losses": torch.tensor(ft_losses)}, f["fixed"])
    st, ss, mt, ms = evaluate(res, name, name, teacher, student, z, held, cfg)
    fig = res.figures.setdefault(name, {})
    fig.update(figures_of(mt, ms, st, ss, held))
    fig["teacher_loss"] = tr["teacher_loss"][:: max(1, len(tr["teacher_loss"]) // 100)]
    fig["student_loss"] = tr["student_loss"][:: max(1, len(tr["student_loss"]) // 100)]
    effects(res, name, mt, ms, basis="host_training")
    # The full loss curves travel too: a target that trains (--full) is compared with them.
    atomic_torch_save({"teacher": st, "student": ss, "teacher_metrics": mt,
                       "student_metrics": ms,
                       "teacher_loss": torch.tensor(tr["teacher_loss"]),
                       "student_loss": torch.tensor(tr["student_loss"])}, f["host_samples"])


def run_target(args: Any, res: Result, name: str, cfg: dict[str, Any], seed: int,
               f: dict[str, str], torch: Any) -> None:
    fixed = torch.load(f["fixed"], weights_only=True)
    host = torch.load(f["host_samples"], weights_only=True)
    z, held = fixed["z"], fixed["held"]
    teacher = make_model(cfg)
    student = make_model(cfg)
    teacher.load_state_dict(torch.load(f["teacher"], weights_only=True))
    student.load_state_dict(torch.load(f["student"], weights_only=True))
    # 1. The host's weights, the host's noise: the target's samples and metrics are the host's.
    st, ss, mt, ms = evaluate(res, name, name, teacher, student, z, held, cfg)
    res.figures.setdefault(name, {}).update(figures_of(mt, ms, st, ss, held))
    for who, mine in (("teacher", st), ("student", ss)):
        for key, x in mine.items():
            res.check_close(f"{name}:{who}_{key}_matches_host", x, host[who][key],
                            rtol=0.0, atol=SAMPLE_ATOL, basis="host_training")
    compare_metrics(res, name, (mt, ms), host, rtol=METRIC_RTOL, basis="host_training")
    effects(res, name, mt, ms, basis="host_training")
    # 2. A few training steps on the target reduce the loss as on the host.
    ft = fixed["finetune"]
    with res.timed(f"{name}:finetune_s"):
        _, losses = train_student(teacher, ft, ft, cfg, anneal=False)
    host_losses = fixed["finetune_losses"].tolist()
    res.figures[name]["finetune_losses"] = {"target": losses, "host": host_losses}
    finetune_falls(res, name, losses, basis="target_finetune")
    ok = len(losses) == len(host_losses) and all(
        abs(a - b) <= LOSS_RTOL * abs(b) + 1e-5 for a, b in zip(losses, host_losses, strict=True))
    res.check(f"{name}:finetune_losses_match_host", ok, basis="target_finetune",
              value=losses, expected=host_losses, tol={"rtol": LOSS_RTOL})
    if not args.full:
        return
    # 3. --full: the target trains teacher, pairs and student itself, from the same seeds.
    tag = f"{name}_target_trained"
    tr = train_all(res, tag, name, cfg, seed)
    st2, ss2, mt2, ms2 = evaluate(res, tag, name, tr["teacher"], tr["student"], z, held, cfg)
    fig = res.figures.setdefault(tag, {})
    fig.update(figures_of(mt2, ms2, st2, ss2, held))
    fig["teacher_loss"] = tr["teacher_loss"][:: max(1, len(tr["teacher_loss"]) // 100)]
    fig["student_loss"] = tr["student_loss"][:: max(1, len(tr["student_loss"]) // 100)]
    effects(res, tag, mt2, ms2, basis="target_training")
    compare_metrics(res, tag, (mt2, ms2), host, rtol=FULL_METRIC_RTOL, basis="target_training")
    for who in ("teacher", "student"):
        mine = window_means(tr[f"{who}_loss"])
        theirs = window_means(host[f"{who}_loss"].tolist())
        ok = len(mine) == len(theirs) > 0 and all(
            abs(a - b) <= FULL_LOSS_RTOL * abs(b) for a, b in zip(mine, theirs, strict=True))
        fig[f"{who}_loss_windows"] = {"target": mine, "host": theirs}
        res.check(f"{tag}:{who}_loss_curve_matches_host", ok, value=mine, expected=theirs,
                  tol={"rtol": FULL_LOSS_RTOL, "windows": LOSS_WINDOWS}, basis="target_training",
                  detail="the target's training loss (window means) left the host's curve")


def compare_metrics(res: Result, tag: str, mine: tuple[dict[str, Any], dict[str, Any]],
                    host: dict[str, Any], *, rtol: float, basis: str) -> None:
    for who, m in zip(("teacher", "student"), mine, strict=True):
        hm = host[f"{who}_metrics"]
        for key in ("straightness", "sw_euler1", "sw_heun9_uniform", "mmd_reference"):
            ok = abs(m[key] - hm[key]) <= rtol * abs(hm[key]) + 1e-4
            res.check(f"{tag}:{who}_{key}_matches_host", ok, value=m[key], expected=hm[key],
                      tol={"rtol": rtol, "atol": 1e-4}, basis=basis)


def finetune_falls(res: Result, name: str, losses: list[float], *, basis: str) -> None:
    k = max(1, len(losses) // 4)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    res.check(f"{name}:finetune_reduces_loss", last < 0.8 * first, value=[first, last],
              basis=basis, detail=f"loss {first:.4g} -> {last:.4g}")


def main(argv: list[str] | None = None) -> int:
    p = base_parser("reflow", __doc__ or "")
    p.add_argument("--datasets", default="8gaussians", help=f"comma list of {', '.join(DATASETS)}")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--full", action="store_true", help="train teacher and student on this side too")
    p.add_argument("--quick", action="store_true", help="tiny sizes for testing the code paths")
    return run_suite("reflow", body, p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
