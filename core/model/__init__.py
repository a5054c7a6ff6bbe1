"""The model as one unit: networks, input representations, preprocessing spec, checkpoint format,
fast serving path and the registry of calibrated versions."""
