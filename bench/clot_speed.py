"""CLOT speed on a 2-core CPU: the map-mode fit step on 3 anchors x 2,000 samples (D = 2, C = 11), a
default-config fit, sampling 10,000 (x, t) pairs and a batch-1 push (the policy's per-step call).

Run: python bench/clot_speed.py [--threads 1] [--before DIR] [--step-only]

``--before DIR`` times the map-mode step of another hti-rl checkout too (e.g. ``git worktree add DIR
<commit>``), side by side in one run: the two alternate in rounds of subprocesses, so that load on a
shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

STEP_SCRIPT = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from hti_rl.clot import CLOTConfig, CLOTData, fit_clot
gen = torch.Generator().manual_seed(0)
n, m, c, d = 250, 8, 11, 2
x = torch.randn(n, c, generator=gen)
times = torch.tensor([0.0, 1.0, 2.0])
w = torch.randn(c, d, generator=gen) / c**0.5
y = (x @ w)[None, :, None] * (1 + times)[:, None, None, None] + 0.3 * torch.randn(3, n, m, d, generator=gen)
data = CLOTData(x=x, times=times, y=y)
steps = int(sys.argv[2])
fit_clot(data, CLOTConfig(steps=2, mode="map"), progress=False)  # warm-up
start = time.perf_counter()
fit_clot(data, CLOTConfig(steps=steps, mode="map"), progress=False)
print((time.perf_counter() - start) / steps)
"""


def step_seconds(tree: Path, threads: int, steps: int) -> float:
    """Seconds per map-mode fit step (default CLOTConfig otherwise) of the hti-rl checkout at ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", STEP_SCRIPT, str(threads), str(steps)], env=env, capture_output=True,
                         text=True, check=True, cwd=tree)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--before", default=None, help="another hti-rl checkout to time the map-mode step of")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="map-mode steps per timed fit")
    parser.add_argument("--step-only", action="store_true", help="only the map-mode step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    here = Path(__file__).resolve().parents[1]
    trees = {"this checkout": here, **({"before": Path(args.before).resolve()} if args.before else {})}
    times: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            times[name].append(step_seconds(tree, args.threads, args.steps))
    print(f"map-mode fit step, 3 anchors x 2,000 samples, D = 2, C = 11, default CLOTConfig, {args.threads} torch thread(s), "
          f"{args.rounds} rounds x {args.steps} steps (goal <= 0.1 s):")
    for name, values in times.items():
        print(f"  {name:14s} median {sorted(values)[len(values) // 2]:.3f} s/step  (rounds: {', '.join(f'{v:.3f}' for v in values)})")
    if args.step_only:
        return

    from hti_rl.clot import CLOTConfig, CLOTData, fit_clot

    gen = torch.Generator().manual_seed(0)
    n, m, c, d = 250, 8, 11, 2  # 250 conditions x 8 samples = 2,000 samples per anchor
    x = torch.randn(n, c, generator=gen)
    t = torch.tensor([0.0, 1.0, 2.0])
    w = torch.randn(c, d, generator=gen) / c**0.5
    y = (x @ w)[None, :, None] * (1 + t)[:, None, None, None] + 0.3 * torch.randn(3, n, m, d, generator=gen)
    data = CLOTData(x=x, times=t, y=y)
    start = time.perf_counter()
    model = fit_clot(data, CLOTConfig(), progress=False)
    fit_s = time.perf_counter() - start
    xq = torch.randn(10_000, c, generator=gen)
    tq = 2 * torch.rand(10_000, generator=gen)
    model.sample(xq[:10], tq[:10])  # warm-up
    start = time.perf_counter()
    model.sample(xq, tq, generator=gen)
    sample_s = time.perf_counter() - start
    y1, x1, t1 = y[0, :1, 0], x[:1], torch.tensor([0.5])
    for _ in range(20):
        model.push(y1, x1, t1)
    start = time.perf_counter()
    for _ in range(200):
        model.push(y1, x1, t1)
    push_ms = (time.perf_counter() - start) / 200 * 1e3
    print(f"fit (default CLOTConfig, {CLOTConfig.steps} steps, K=3, N={n}, M={m}, D={d}, C={c}): {fit_s:.1f} s (limit 300 s)")
    print(f"sample 10,000 (x, t) pairs: {sample_s:.3f} s (limit 1 s)")
    print(f"push, batch 1: {push_ms:.2f} ms")


if __name__ == "__main__":
    main()
