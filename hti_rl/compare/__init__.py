"""Stage 7, comparison: experiment specs, the comparison run, its report, and the demo built on them."""
