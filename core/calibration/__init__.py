"""From logits to calibrated probabilities and review tiers: calibrators, tiers and metrics."""
