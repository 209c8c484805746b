"""CLOT speed on a 2-core CPU: default-config fit on 3 anchors x 2,000 samples (D = 2, C = 11), then
sampling 10,000 (x, t) pairs and a batch-1 push (the policy's per-step call).

Run: python bench/clot_speed.py [--threads 2]

On a machine shared with other busy processes, --threads 1 avoids OpenMP oversubscription, which can
slow torch tenfold when more threads than free cores spin.
"""

from __future__ import annotations

import argparse
import time

import torch

from hti_rl.clot import CLOTConfig, CLOTData, fit_clot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    torch.set_num_threads(parser.parse_args().threads)
    gen = torch.Generator().manual_seed(0)
    n, m, c, d = 250, 8, 11, 2  # 250 conditions x 8 samples = 2,000 samples per anchor
    x = torch.randn(n, c, generator=gen)
    times = torch.tensor([0.0, 1.0, 2.0])
    w = torch.randn(c, d, generator=gen) / c**0.5
    y = (x @ w)[None, :, None] * (1 + times)[:, None, None, None] + 0.3 * torch.randn(3, n, m, d, generator=gen)
    data = CLOTData(x=x, times=times, y=y)

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

    print(f"fit (default CLOTConfig, {CLOTConfig.steps} steps, K=3, N={n}, M={m}, D={d}, C={c}): {fit_s:.1f} s "
          f"(limit 300 s)")
    print(f"sample 10,000 (x, t) pairs: {sample_s:.3f} s (limit 1 s)")
    print(f"push, batch 1: {push_ms:.2f} ms")


if __name__ == "__main__":
    main()
