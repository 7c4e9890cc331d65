"""torchao, imported when quantizing (never at package import), with a one-line install hint."""

from __future__ import annotations

import logging
from typing import Any

from .._compat import PYTREE_LOGGER
from ..errors import UsageError

#: The torchao release this package is written and tested against (the ``quant`` extra).
TORCHAO_PIN = "0.18.0"


def import_torchao() -> tuple[Any, Any]:
    """``torchao`` and ``torchao.quantization.pt2e.quantize_pt2e``, with the x86 int8 fusion
    passes registered with Inductor.

    torchao registers those passes (``dequantize -> conv -> quantize`` into oneDNN int8
    kernels) as a side effect of importing its x86 quantizer module. A process that only loads
    a saved program never imports the quantizer; without this import its lowering and its
    compiled package silently ran every conv in fp32 (measured: resnet18 at batch 1 in a
    fresh process 21.9 ms, the fp32 speed, instead of about 3.5 ms).

    Raises:
        UsageError: torchao is not installed.
    """
    # torchao 0.18 registers an Enum with torch's pytree on import and torch logs a
    # deprecation warning about it; it is not the user's business, so mute that one logger.
    pytree_log = logging.getLogger(PYTREE_LOGGER)
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        import torchao  # type: ignore[import-untyped]
        from torchao.quantization.pt2e import quantize_pt2e  # type: ignore[import-untyped]
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as exc:  # optional dependency: one line that says how to get it
        raise UsageError(
            f"quantize_int8 needs torchao: pip install 'convdoctor[quant]' (torchao=={TORCHAO_PIN})"
        ) from exc
    finally:
        pytree_log.setLevel(level)
    return torchao, quantize_pt2e
