"""The methods stage: drop-in SB3 policies at any weight (the CLOT surrogate, baselines, peers) and how each is fitted."""
