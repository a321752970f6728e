#!/usr/bin/env python3
"""How long the ReFlow teacher must train before its samples resolve the 8 modes (natively).

Trains the toy teacher (``rvtorch.validate.reflow``) with several step counts, learning rates,
widths and with/without cosine decay, from the suite's seed, with one thread, and records per
variant the CPU seconds and the mode checks of its 9-NFE Heun and 63-NFE reference samples
(off-mode share, smallest and largest mode share, verdicts), sliced W and MMD. It also records
why sliced W alone cannot see the difference: the distance of a ring through the modes to the
data next to the distance of two independent data sets.

Needs torch in this Python (the venv: ``.venv/bin/pip install torch``; results match Debian's
2.6.0 in the x86 reference rootfs to 4 decimals). Writes benchmarks/results/reflow_teacher.json.

    .venv/bin/python benchmarks/bench_reflow_teacher.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "reflow_teacher.json"

# (name, overrides of reflow.CFG). "old" is the recipe before the teacher was fixed.
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("old_1500_const_lr2e-3", {"teacher_steps": 1500, "teacher_lr": 2e-3,
                               "teacher_anneal": False}),
    ("1500_cos_lr2e-3", {"teacher_steps": 1500, "teacher_lr": 2e-3}),
    ("4000_cos_lr2e-3", {"teacher_steps": 4000, "teacher_lr": 2e-3}),
    ("4000_cos_lr5e-3", {"teacher_steps": 4000, "teacher_lr": 5e-3}),
    ("4000_cos_lr2e-3_width128", {"teacher_steps": 4000, "teacher_lr": 2e-3, "width": 128}),
    ("6000_cos_lr5e-3 (CFG)", {}),
    ("8000_cos_lr5e-3", {"teacher_steps": 8000, "teacher_lr": 5e-3}),
]
SEED = 1234  # reflow.main's default seed, 8gaussians


def write(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def evaluate(reflow: Any, torch: Any, model: Any) -> dict[str, Any]:
    cfg = reflow.CFG
    g = torch.Generator().manual_seed(SEED + 3)  # the suite's evaluation noise and data
    z = torch.randn(cfg["n_eval"], 2, generator=g)
    held = reflow.sample_data("8gaussians", cfg["n_eval"], g)
    centers = reflow.gaussian_centers()
    out: dict[str, Any] = {}
    with torch.no_grad():
        samples = {"heun9_uniform": reflow.heun(model, z, reflow.uniform_grid(5)),
                   "reference": reflow.heun(model, z, reflow.uniform_grid(cfg["ref_heun_steps"]))}
    for key, x in samples.items():
        st = reflow.mode_stats(x, centers, reflow.MODE_RADIUS)
        v = reflow.mode_verdicts(st)
        out[key] = {"off_mode": round(st["off_mode"], 4),
                    "min_mode_share": round(min(st["mass"]), 4),
                    "max_mode_share": round(max(st["mass"]), 4),
                    "mode_checks_pass": all(c["ok"] for c in v.values()),
                    "sliced_w": round(reflow.sliced_wasserstein(x, held, cfg["sw_dirs"]), 4),
                    "mmd": round(reflow.rbf_mmd(x[: cfg["n_mmd"]], held[: cfg["n_mmd"]]), 4)}
    return out


def sw_floor(reflow: Any, torch: Any) -> dict[str, Any]:
    """Sliced W at 1000 points: data vs data, ring vs data (what a ring looks like to it)."""
    out: dict[str, list[float]] = {"data_vs_data": [], "ring_vs_data": [], "mmd_data_vs_data": [],
                                   "mmd_ring_vs_data": []}
    for s in range(3):
        g = torch.Generator().manual_seed(s)
        a = reflow.sample_data("8gaussians", 1000, g)
        b = reflow.sample_data("8gaussians", 1000, g)
        ang = torch.rand(1000, generator=g) * 2 * math.pi
        r = 2.0 + 0.15 * torch.randn(1000, generator=g)
        ring = torch.stack([r * torch.cos(ang), r * torch.sin(ang)], dim=1)
        out["data_vs_data"].append(round(reflow.sliced_wasserstein(a, b, 256), 4))
        out["ring_vs_data"].append(round(reflow.sliced_wasserstein(ring, b, 256), 4))
        out["mmd_data_vs_data"].append(round(reflow.rbf_mmd(a[:500], b[:500]), 4))
        out["mmd_ring_vs_data"].append(round(reflow.rbf_mmd(ring[:500], b[:500]), 4))
    st = reflow.mode_stats(ring, reflow.gaussian_centers(), reflow.MODE_RADIUS)
    out["ring_off_mode"] = [round(st["off_mode"], 4)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    try:
        import torch
    except ImportError as exc:
        print(f"rvtorch: error: this benchmark needs torch in this Python ({exc}; "
              ".venv/bin/pip install torch)", file=sys.stderr)
        return 2
    from rvtorch.validate import reflow

    torch.set_num_threads(1)
    out: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads": 1},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bounds": {"mode_radius": reflow.MODE_RADIUS, "mode_mass_tol": reflow.MODE_MASS_TOL,
                   "off_mode_max": reflow.OFF_MODE_MAX},
        "sliced_w_floor": sw_floor(reflow, torch), "variants": {}}
    print(f"{'variant':<28} {'CPU s':>6} {'off 9NFE':>9} {'min':>6} {'max':>6} {'off ref':>8} "
          f"{'pass':>5}")
    for name, over in VARIANTS:
        cfg = {**reflow.CFG, **over}
        t0 = time.process_time()
        model, losses = reflow.train_teacher("8gaussians", cfg, SEED)
        cpu = time.process_time() - t0
        ev = evaluate(reflow, torch, model)
        out["variants"][name] = {"config": over, "train_cpu_s": round(cpu, 2),
                                 "final_loss_mean_last_500": round(sum(losses[-500:]) / 500, 4),
                                 **ev}
        h, r = ev["heun9_uniform"], ev["reference"]
        print(f"{name:<28} {cpu:>6.1f} {h['off_mode']:>9.3f} {h['min_mode_share']:>6.3f} "
              f"{h['max_mode_share']:>6.3f} {r['off_mode']:>8.3f} "
              f"{h['mode_checks_pass'] and r['mode_checks_pass']!s:>5}", flush=True)
        write(out, args.out)
    print(f"sliced W at 1000 points: {out['sliced_w_floor']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
