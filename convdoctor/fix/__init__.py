"""Remedies: each function's docstring names the finding codes it answers.

Every remedy returns a new object or changes only what its name says; none is applied
behind the user's back.
"""

from .bn import freeze_bn
from .fusion import find_conv_bn_pairs, fuse_conv_bn
from .inference import inference_mode, prepare_for_inference, recalibrate_bn
from .init import leaky_relu, reinit
from .optim import GradAccumulator, param_groups, suggest_clip_norm, suggest_lr
from .quantize import QuantizedLayer, QuantResult, quantize_int8
from .warmup import WarmupResult, warmup

__all__: list[str] = [
    "WarmupResult",
    "warmup",
    "find_conv_bn_pairs",
    "fuse_conv_bn",
    "inference_mode",
    "prepare_for_inference",
    "recalibrate_bn",
    "freeze_bn",
    "leaky_relu",
    "reinit",
    "GradAccumulator",
    "param_groups",
    "suggest_clip_norm",
    "suggest_lr",
    "QuantResult",
    "QuantizedLayer",
    "quantize_int8",
]
