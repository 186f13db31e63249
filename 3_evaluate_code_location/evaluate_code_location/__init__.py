"""3_evaluate: measure the model on held-out data against baselines; checks that gate deployment."""
