"""Evaluation reports, charts and the latency benchmark."""
