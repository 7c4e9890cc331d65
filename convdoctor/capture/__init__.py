"""Capture layer: load models, build inputs, and trace a module into an op graph."""
