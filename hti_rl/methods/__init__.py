"""Stage 6, the methods: drop-in SB3 policies at any weight (the CLOT surrogate, baselines, peers) and how each is fitted."""
