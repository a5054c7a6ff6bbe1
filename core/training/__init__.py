"""Training and distillation of the detectors, their data loading, the patch teacher and the bias report."""
