"""One normaliser for what every verb is given: the model (module or MODEL spec), its
checkpoint, the train/eval mode to serve it in, and its input in any form.

The CLI and the Python API both call :func:`prepare`, so ``audit("torchvision:resnet18",
weights="ckpt.pt")`` in Python behaves exactly like ``convdoctor audit torchvision:resnet18
--weights ckpt.pt``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..errors import UsageError
from .choices import ModelMode, parse_mode
from .inputs import ModelInput, normalize_input, takes_image_list
from .load import LoadedModel, load_model, load_weights

#: A model as every verb accepts it.
ModelLike = nn.Module | str | LoadedModel


def prepare_model(
    model: ModelLike,
    *,
    weights: str | os.PathLike[str] | None = None,
    mode: ModelMode | str = ModelMode.AS_IS,
    meta: bool = False,
    trusted: bool = False,
) -> LoadedModel:
    """A loaded model, its checkpoint applied and its mode set, never touching the caller's module.

    Args:
        model: an ``nn.Module``, a MODEL spec string, or an already loaded model.
        weights: a state_dict checkpoint for a MODEL spec (read with ``weights_only=True``).
        mode: see :class:`ModelMode`. ``eval`` on a caller's module works on a deep copy.
        meta: build a spec on the meta device (analysis verbs); ignored when ``weights`` is given.
        trusted: a ``.pt``/``.pt2`` spec is a file you trust: load it without vetting
            (see :mod:`convdoctor.capture.archive`).

    Returns:
        The model to work on.

    Raises:
        UsageError: ``weights`` with a module, a bad mode, or not a model at all.
        ModelLoadError: the spec or checkpoint cannot be loaded.
    """
    run_mode = parse_mode(mode)
    if isinstance(model, str):
        loaded = load_model(model, meta=meta and weights is None, trusted=trusted)
    elif isinstance(model, LoadedModel):
        loaded = model
    elif isinstance(model, nn.Module):
        loaded = LoadedModel(model, type(model).__name__)
    else:
        raise UsageError(f"expected an nn.Module or a MODEL spec string, got {type(model).__name__}")
    if weights is not None:
        if isinstance(model, nn.Module):
            raise UsageError("weights= applies to a MODEL spec; load the checkpoint into your module yourself")
        loaded = load_weights(loaded, weights)
    if run_mode is ModelMode.EVAL or (run_mode is ModelMode.AUTO and loaded.fresh):
        loaded = _in_eval(loaded, ours=isinstance(model, str) or loaded.fresh)
    return loaded


def _in_eval(loaded: LoadedModel, *, ours: bool) -> LoadedModel:
    """``eval()`` on convdoctor's own copy; a caller's module is copied first."""
    module = loaded.module if ours else copy.deepcopy(loaded.module)
    try:
        module.eval()
    except NotImplementedError:  # an exported program's module has its mode baked in
        return loaded
    rebuild = loaded.rebuild
    fresh_eval = None if rebuild is None else (lambda: rebuild().eval())
    return LoadedModel(module, loaded.spec, loaded.default_input_size, fresh_eval, loaded.on_meta, loaded.fresh)


def model_input(
    loaded: LoadedModel, input_size: Any = None, example_input: Any = None, *, fallback: Sequence[int] | None = None
) -> ModelInput:
    """The model's call from any input form; without one, the spec's suggested size, else ``fallback``.

    Raises:
        UsageError: both or neither given without a default, or a malformed form.
    """
    default: Sequence[int] | None = loaded.default_input_size or fallback
    return normalize_input(input_size, example_input, default_size=default, images=takes_image_list(loaded.module))


def prepare(
    model: ModelLike,
    input_size: Any = None,
    example_input: Any = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    mode: ModelMode | str = ModelMode.AS_IS,
    meta: bool = False,
    trusted: bool = False,
) -> tuple[LoadedModel, ModelInput]:
    """:func:`prepare_model` then :func:`model_input`: everything a verb needs before it runs.

    The input is validated first, so a malformed size fails before any model is built.
    """
    if example_input is not None and input_size is not None:
        raise UsageError("give input_size or example_input, not both")
    normalize_input(input_size, example_input, default_size=(1, 1))  # syntax only; the model decides the rest
    loaded = prepare_model(model, weights=weights, mode=mode, meta=meta, trusted=trusted)
    return loaded, model_input(loaded, input_size, example_input)
