"""Architecture advice with exact numbers from captured graphs.

* :mod:`.alternatives`: :func:`layer_alternatives`, the ``layers`` verb: params and MACs of
  the usual ways to map ``c_in -> c_out`` channels, each inspected as a real layer.
* :mod:`.training`: :func:`training_memory` (``inspect --train-memory``): one training step's
  memory, the largest batch that fits a budget, and the accumulation steps to a target batch.
"""

from __future__ import annotations

from .alternatives import layer_alternatives
from .training import OPTIMIZER_STATE, TrainingMemory, training_memory

__all__ = ["OPTIMIZER_STATE", "TrainingMemory", "layer_alternatives", "training_memory"]
