"""The comparison stage: experiment specs, the comparison run, its report, and the demo built on them."""
