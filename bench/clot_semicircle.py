"""Conditional semicircles: a CLOT benchmark with a known answer.

For a condition x = start angle φ (given to the model as (cos φ, sin φ), standardised), the output at
time t is a point on the unit circle at angle φ + π·t, plus isotropic Gaussian noise (std 0.05).
Anchors at t = 0, 0.5, 1; held out t = 0.25, 0.75, where the truth is known in closed form. Each
variant is fitted once on the same data and scored by the held-out W2 to the true conditional
distribution (POT, exact, averaged over test conditions) and the mean distance to the true circle.

Straight-line paths (Euclidean metric, no potential) cut the chord between anchors, 90° apart, and
miss the circle by up to 1 − cos 45° ≈ 0.29 at the held-out times. The potential, a KDE over all
anchors' samples pooled across neighbouring conditions, is high on the circle; the learned metric
then makes motion along the circle cheap. Neither sees the held-out times.

Run: python bench/clot_semicircle.py [--steps N] [--quick] [--seed N] [--variants full,eucpot,...]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import ot
import torch

from hti_rl.clot import CLOTConfig, CLOTData, fit_clot

NOISE = 0.05
ANCHORS = (0.0, 0.5, 1.0)
HELD_OUT = (0.25, 0.75)
# key -> (name, CLOTConfig overrides)
VARIANTS = {
    "full": ("full (learned metric + potential)", dict()),
    "straight": ("euclidean, no potential", dict(metric="euclidean", potential=False)),
    "eucpot": ("euclidean + potential", dict(metric="euclidean")),
    "metric": ("learned metric, no potential", dict(potential=False)),
    "endpoint": ("full, endpoint mode", dict(mode="endpoint")),
}


def condition(phi: torch.Tensor) -> torch.Tensor:
    """φ [N] -> standardised condition [N, 2] ((cos φ, sin φ) has std 1/√2 per coordinate for uniform φ)."""
    return torch.stack([phi.cos(), phi.sin()], -1) * math.sqrt(2)


def truth(phi: torch.Tensor, t: float, m: int, gen: torch.Generator) -> torch.Tensor:
    """φ [N] -> m samples [N, m, 2] of the true distribution at time t."""
    angle = phi[:, None] + math.pi * t
    mean = torch.stack([angle.cos(), angle.sin()], -1).expand(-1, m, -1)
    return mean + NOISE * torch.randn(mean.shape, generator=gen)


def score(model, phi: torch.Tensor, t: float, m: int, gen: torch.Generator) -> tuple[float, float]:
    """Held-out W2 (mean over conditions) and mean distance to the unit circle at time t."""
    x = condition(phi).repeat_interleave(m, 0)
    pred = model.sample(x, torch.full((x.shape[0],), t), generator=gen).view(len(phi), m, 2)
    true = truth(phi, t, m, gen)
    w2 = [math.sqrt(ot.emd2([], [], ot.dist(p.numpy().astype(np.float64), q.numpy().astype(np.float64))))
          for p, q in zip(pred, true)]
    return float(np.mean(w2)), float((pred.norm(dim=-1) - 1).abs().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=CLOTConfig.steps)
    parser.add_argument("--conditions", type=int, default=250)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="only the full method and the straight-line variant")
    parser.add_argument("--seed", type=int, default=0, help="CLOT fit seed (CLOTConfig.seed); the data stay the same")
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated variants to fit, by name or key ({', '.join(VARIANTS)}); default all "
                             "(with --quick: full, straight)")
    args = parser.parse_args()
    if args.variants is None:
        keys = ["full", "straight"] if args.quick else list(VARIANTS)
    else:
        by_name = {name: key for key, (name, _) in VARIANTS.items()}
        keys = [by_name.get(v.strip(), v.strip()) for v in args.variants.split(",") if v.strip()]
        unknown = [k for k in keys if k not in VARIANTS]
        if unknown:
            parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)} or their names")
    torch.set_num_threads(1)  # small networks: one thread (see hti_rl/threads.py)
    gen = torch.Generator().manual_seed(0)
    phi = 2 * math.pi * torch.rand(args.conditions, generator=gen)
    y = torch.stack([truth(phi, t, args.samples, gen) for t in ANCHORS])
    data = CLOTData(x=condition(phi), times=torch.tensor(ANCHORS), y=y)
    test_phi = 2 * math.pi * torch.rand(20, generator=gen)

    rows = []
    for key in keys:
        name, overrides = VARIANTS[key]
        start = time.perf_counter()
        model = fit_clot(data, CLOTConfig(steps=args.steps, seed=args.seed, **overrides), progress=False)
        fit_s = time.perf_counter() - start
        scores = [score(model, test_phi, t, 200, torch.Generator().manual_seed(1)) for t in HELD_OUT]
        rows.append((name, *np.mean(scores, 0), fit_s))
    print(f"conditional semicircles: N={args.conditions} conditions x M={args.samples} samples, anchors t={ANCHORS}, "
          f"held out t={HELD_OUT}, {args.steps} steps, noise {NOISE}" + (f", seed {args.seed}" if args.seed else ""))
    print(f"{'variant':36s} {'held-out W2':>12s} {'dist to circle':>15s} {'fit s':>7s}")
    for name, w2, dist, fit_s in rows:
        print(f"{name:36s} {w2:12.4f} {dist:15.4f} {fit_s:7.1f}")
    print(f"{'noise floor (W2 of two true samples)':36s} "
          f"{np.mean([score_truth(test_phi, t) for t in HELD_OUT]):12.4f} {NOISE * math.sqrt(2 / math.pi):15.4f}")


def score_truth(phi: torch.Tensor, t: float) -> float:
    """W2 between two independent 200-sample draws of the truth: the floor of the W2 column."""
    g = torch.Generator().manual_seed(2)
    a, b = truth(phi, t, 200, g), truth(phi, t, 200, g)
    return float(np.mean([math.sqrt(ot.emd2([], [], ot.dist(p.double().numpy(), q.double().numpy())))
                          for p, q in zip(a, b)]))


if __name__ == "__main__":
    main()
