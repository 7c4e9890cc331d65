"""Analyses: pure functions of a captured :class:`~convdoctor.graph.Graph`."""
