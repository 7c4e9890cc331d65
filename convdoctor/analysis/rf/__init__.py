"""Receptive fields: analytic rules over the op graph, and the autograd cross-check.

``core.analyze`` walks the graph with the rules of ``shape_rules``, ``reduction_rules`` and ``window_rules``;
``gradient.gradient_field`` measures the same quantity with autograd on a surrogate model;
``findings`` turns either into RF_* findings.
"""
