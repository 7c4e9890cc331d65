"""Remedies for units that die or gradients that vanish or explode at initialisation.

Both return a new model and leave the user's untouched: :func:`leaky_relu` answers
``DEAD_RELU``; :func:`reinit` answers ``POOR_INIT``, and ``DEAD_RELU``, ``VANISHING_GRADIENT``,
``EXPLODING_GRADIENT`` and ``LOSS_AT_CHANCE`` when the initialisation is the cause.
"""

from __future__ import annotations

import copy
import enum

import torch
from torch import nn

from .._compat import BatchNormBase, ConvBase
from ..errors import UsageError

#: PyTorch's LeakyReLU default slope; He et al. (2015) found small slopes work as well as learnt ones.
LEAKY_SLOPE = 0.01


class InitScheme(str, enum.Enum):
    """Initialisation schemes :func:`reinit` applies."""

    KAIMING = "kaiming"
    XAVIER = "xavier"


def leaky_relu(model: nn.Module, negative_slope: float = LEAKY_SLOPE) -> nn.Module:
    """A copy of ``model`` with every ``nn.ReLU`` module replaced by ``nn.LeakyReLU``.

    A leaky unit passes ``negative_slope`` of the gradient when its input is negative, so a
    unit pushed below zero for every input (a dead ReLU) can recover. Answers ``DEAD_RELU``.
    Functional ``F.relu`` calls inside ``forward`` are code, not modules: edit them to
    ``F.leaky_relu(x, negative_slope)``.

    Args:
        model: the model (not modified).
        negative_slope: slope for negative inputs.

    Returns:
        The new model.

    Raises:
        UsageError: the model has no ``nn.ReLU`` module.
    """
    new = copy.deepcopy(model)
    swapped = 0
    for parent in new.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.ReLU:
                setattr(parent, name, nn.LeakyReLU(negative_slope, inplace=child.inplace))
                swapped += 1
    if not swapped:
        raise UsageError(
            "leaky_relu found no nn.ReLU module; replace F.relu calls in forward() with "
            f"F.leaky_relu(x, {negative_slope})"
        )
    return new


def reinit(
    model: nn.Module,
    scheme: InitScheme | str = InitScheme.KAIMING,
    *,
    nonlinearity: str = "relu",
    seed: int | None = None,
) -> nn.Module:
    """A copy of ``model`` with conv and linear weights re-initialised, biases zeroed, BatchNorm reset.

    ``kaiming``: ``kaiming_normal_(mode="fan_out")`` (He et al. 2015; torchvision's ResNet
    choice) keeps the gradient variance constant through ReLU layers. ``xavier``:
    ``xavier_uniform_`` with the gain of ``nonlinearity`` (Glorot & Bengio 2010) for
    tanh/sigmoid/linear layers. BatchNorm layers get weight 1, bias 0 and fresh running
    statistics. Answers ``POOR_INIT`` (with the scheme its fix names) and ``DEAD_RELU``,
    ``VANISHING_GRADIENT``, ``EXPLODING_GRADIENT`` and ``LOSS_AT_CHANCE`` caused by the
    initialisation.

    Args:
        model: the model (not modified).
        scheme: ``"kaiming"`` or ``"xavier"``.
        nonlinearity: the activation after the layers (``"relu"``, ``"leaky_relu"``,
            ``"tanh"``, ``"sigmoid"``, ``"linear"``).
        seed: seed for a reproducible initialisation (the global RNG is left untouched).

    Returns:
        The new model.

    Raises:
        UsageError: an unknown scheme or nonlinearity.
    """
    try:
        scheme = InitScheme(scheme)
        gain = nn.init.calculate_gain(nonlinearity)  # type: ignore[arg-type]
    except ValueError as exc:
        raise UsageError(
            f"reinit: {exc}; schemes: kaiming, xavier; nonlinearity: relu, leaky_relu, tanh, sigmoid, linear"
        ) from None
    new = copy.deepcopy(model)
    devices = [p.device for p in new.parameters() if p.device.type != "cpu"]
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            for m in new.modules():
                _reinit_module(m, scheme, nonlinearity, gain)
    return new


def _reinit_module(m: nn.Module, scheme: InitScheme, nonlinearity: str, gain: float) -> None:
    weight = getattr(m, "weight", None)
    if isinstance(m, (nn.Linear, ConvBase)) and isinstance(weight, nn.Parameter):
        if scheme is InitScheme.KAIMING:
            nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity=nonlinearity)  # type: ignore[arg-type]
        else:
            nn.init.xavier_uniform_(weight, gain=gain)
        bias = getattr(m, "bias", None)
        if isinstance(bias, torch.Tensor):
            nn.init.zeros_(bias)
    elif isinstance(m, BatchNormBase):
        m.reset_parameters()
