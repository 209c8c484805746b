"""Stage 6½, deployment: calibrate a fitted surrogate on a grid of weights (choose on one episode set,
estimate on another) and show what it deploys where (docs/method.md §10)."""
