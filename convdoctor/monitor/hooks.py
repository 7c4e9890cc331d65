"""Forward hooks the monitor installs, and the bookkeeping to remove every one of them.

Two probes, both cheap enough to leave on every step:

* :class:`DepthOrder` records the order in which modules that own parameters run during
  the first forward pass, so "first layer" and "last layer" mean depth, not the order of
  ``__init__``. It removes itself after one forward.
* :class:`BNProbe` records the smallest batch a BatchNorm layer normalised in training mode
  since the last step. It reads ``module.training`` in a *post*-hook, i.e. the mode the
  forward actually used, so a ``freeze_bn`` pre-hook that forces eval mode is respected.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .._compat import BatchNormBase, compiled_in_place, compiled_inner

logger = logging.getLogger(__name__)

#: Layers whose weight has one output unit per slice of dim 0 (dim 1 for transposed convs):
#: the layers whose per-unit gradients tell dead units apart.
UNIT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DistributedDataParallel / DataParallel / torch.compile wrappers.

    Names are reported without the wrapper's ``module.`` or ``_orig_mod.`` prefix.
    """
    for _ in range(4):  # wrappers nest at most a few deep (compile(DDP(model)))
        inner = (
            model.module
            if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel))
            else compiled_inner(model)
        )
        if isinstance(inner, nn.Module):
            model = inner
        else:
            break
    return model


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` or a module it wraps (DDP, DataParallel) runs under ``torch.compile``."""
    for _ in range(4):
        if compiled_in_place(model) or compiled_inner(model) is not None:
            return True
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return False
        model = inner
    return False


def unit_dim(module: nn.Module) -> int:
    """The weight dimension that indexes output units (filters) of a conv or linear layer."""
    return 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0


def unit_owners(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """Parameter name -> (module path, module) for the weights of conv and linear layers."""
    out = {}
    for path, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, UNIT_LAYERS) and isinstance(weight, nn.Parameter) and weight.dim() >= 2:
            out[f"{path}.weight" if path else "weight"] = (path, module)
    return out


def is_frozen_bn(bn: nn.Module, parent: nn.Module | None) -> bool:
    """A BatchNorm layer belongs to a frozen part of the model.

    Its affine parameters exist and none requires grad; without affine parameters, the
    module that contains it has parameters and none requires grad.
    """
    own = list(bn.parameters(recurse=False))
    if own:
        return not any(p.requires_grad for p in own)
    if parent is None:
        return False
    around = list(parent.parameters())
    return bool(around) and not any(p.requires_grad for p in around)


class HookSet:
    """RemovableHandle bookkeeping: everything installed is removed by :meth:`remove`."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def add(self, handle: RemovableHandle) -> None:
        """Keep a handle for later removal."""
        self._handles.append(handle)

    def remove(self) -> None:
        """Remove every hook added so far (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __len__(self) -> int:
        return len(self._handles)


class DepthOrder:
    """Module paths in first-forward order, for modules that own parameters directly."""

    def __init__(self, model: nn.Module) -> None:
        self.order: list[str] = []
        self._hooks = HookSet()
        for name, module in model.named_modules():
            if any(True for _ in module.parameters(recurse=False)):
                self._hooks.add(module.register_forward_hook(self._make(name)))

    def _make(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if name not in self.order:
                self.order.append(name)

        return hook

    @property
    def captured(self) -> bool:
        """Whether a forward pass ran since the probe was installed."""
        return bool(self.order)

    def remove(self) -> None:
        """Stop recording (called after the first step)."""
        self._hooks.remove()


class BNProbe:
    """The smallest batch any BatchNorm layer normalised in training mode since the last read."""

    def __init__(self, model: nn.Module, world_size: int = 1) -> None:
        self.names: list[str] = []
        self._min_batch: int | None = None
        self._training_layers: set[str] = set()
        self._hooks = HookSet()
        for name, module in model.named_modules():
            if isinstance(module, BatchNormBase):
                # SyncBatchNorm normalises over the batches of every rank together.
                scale = world_size if isinstance(module, nn.SyncBatchNorm) else 1
                self.names.append(name)
                self._hooks.add(module.register_forward_hook(self._make(name, scale)))

    def _make(self, name: str, scale: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not module.training or not args or not isinstance(args[0], torch.Tensor):
                return
            n = int(args[0].shape[0]) * scale
            self._min_batch = n if self._min_batch is None else min(self._min_batch, n)
            self._training_layers.add(name)

        return hook

    def read(self) -> tuple[int | None, int]:
        """Return and reset (smallest batch seen in training mode, number of such layers)."""
        out = (self._min_batch, len(self._training_layers))
        self._min_batch = None
        self._training_layers = set()
        return out

    def remove(self) -> None:
        """Remove the hooks."""
        self._hooks.remove()


#: Nonlinearities whose gradient is exactly zero on a half-line (or outside an interval): a unit
#: pushed there for every input stops learning for good. ReLU6 and Hardtanh run as ``hardtanh``.
DYING_ACTIVATIONS = frozenset({"relu", "relu6", "hardtanh", "threshold", "hardswish", "hardsigmoid"})
#: Nonlinearities with a non-zero gradient almost everywhere: their units cannot be "dead".
#: (sigmoid and tanh saturate instead: VANISHING_GRADIENT watches that.)
LIVE_ACTIVATIONS = frozenset(
    {
        "leaky_relu",
        "prelu",
        "rrelu",
        "elu",
        "selu",
        "celu",
        "gelu",
        "silu",
        "mish",
        "sigmoid",
        "tanh",
        "softplus",
        "softsign",
        "logsigmoid",
        "tanhshrink",
    }
)
_ACTIVATIONS = DYING_ACTIVATIONS | LIVE_ACTIVATIONS
#: Normalisations: after one of them the next layer's input scale no longer depends on the
#: weight scale before it (BatchNorm and its kin make a layer scale-invariant).
NORMALIZATIONS = frozenset({"batch_norm", "group_norm", "layer_norm", "instance_norm", "rms_norm"})
_DYING_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Threshold, nn.Hardswish, nn.Hardsigmoid)
_LIVE_MODULES = (
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.LogSigmoid,
    nn.Tanhshrink,
)


class ActivationProbe:
    """The nonlinearity that follows each conv/linear layer, seen in the first forward pass.

    A ``TorchFunctionMode`` is active for that one pass (entered by a forward pre-hook on the
    root, left by an ``always_call`` forward hook, so an exception cannot leave it on): it sees
    module activations (``nn.ReLU`` calls ``F.relu``) and functional ones (``F.relu``,
    ``x.relu_()``) alike. The first activation called after a unit layer ran, and before the
    next unit layer runs, is that layer's; a normalisation called in between marks the layer
    :meth:`normalized`. Compiled models are not probed (the mode would be
    traced); :meth:`can_die` then falls back on the activation modules the model holds.
    """

    def __init__(self, model: nn.Module, unit_paths: dict[nn.Module, str]) -> None:
        self.after: dict[str, str] = {}
        self.normed: set[str] = set()
        self.captured = False
        self._last: str | None = None
        self._since: str | None = None
        self._mode: Any = None
        self._hooks = HookSet()
        self._fallback = _module_fallback(model)
        if compiled_in_place(model):
            return
        for module, path in unit_paths.items():
            self._hooks.add(module.register_forward_hook(self._make(path)))
        self._hooks.add(model.register_forward_pre_hook(self._enter))
        self._hooks.add(model.register_forward_hook(self._exit, always_call=True))

    def _make(self, path: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._last = self._since = path

        return hook

    def _enter(self, module: nn.Module, args: Any) -> None:
        if self._mode is None and not self.captured:
            self._mode = _ActivationMode(self)
            self._mode.__enter__()

    def _exit(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
            self.captured = True
            self.remove()

    def seen(self, name: str) -> None:
        """Called by the mode for every torch function: keep activations that follow a unit layer."""
        act = name.rstrip("_")
        if act in NORMALIZATIONS and self._since is not None:
            self.normed.add(self._since)
        if act in _ACTIVATIONS and self._last is not None:
            self.after.setdefault(self._last, act)
            self._last = None

    def activation(self, path: str) -> str | None:
        """The nonlinearity recorded after layer ``path`` (None: none seen, or not probed)."""
        return self.after.get(path)

    def normalized(self, path: str) -> bool | None:
        """Whether a normalisation ran between layer ``path`` and the next one (None: not probed)."""
        return path in self.normed if self.captured else None

    def can_die(self, path: str) -> bool:
        """Whether the units of layer ``path`` can be dead (see :data:`DYING_ACTIVATIONS`)."""
        if self.captured:
            return self.after.get(path) in DYING_ACTIVATIONS
        return self._fallback

    def remove(self) -> None:
        """Remove the hooks (the mode is left as soon as the first forward returns)."""
        self._hooks.remove()


def _module_fallback(model: nn.Module) -> bool:
    """Without a probe: units can die unless every activation module is one that cannot
    (functional ReLUs are invisible here, so a model without activation modules may have them)."""
    kinds = [m for m in model.modules() if isinstance(m, _DYING_MODULES + _LIVE_MODULES)]
    return not kinds or any(isinstance(m, _DYING_MODULES) for m in kinds)


class _ActivationMode(torch.overrides.TorchFunctionMode):
    def __init__(self, probe: ActivationProbe) -> None:
        super().__init__()
        self._probe = probe

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self._probe.seen(getattr(func, "__name__", ""))
        return func(*args, **(kwargs or {}))
