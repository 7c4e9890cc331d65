"""The initialisation as the first step finds it: what ``POOR_INIT`` judges.

Two one-shot records, both kept on the device until the first sync reads them back with the
rest of the interval (no host sync of their own):

* the first forward pass: the root mean square of every conv/linear layer's input and output,
  in the order the layers run (forward hooks that remove themselves when the pass returns);
* the first sampled step (after ``backward``): per layer, the weight's norm, mean and
  *spread* (the norm of the weight minus its mean filter: 0 when every filter is identical),
  and the same norm and spread of its gradient;
* the sync that reads the record back: the weight's norm and spread again, after the optimizer
  steps in between (identical filters that are still identical then did not diverge; a zero
  layer behind a zero-initialised classifier gets its first non-zero, distinct gradients one
  step later and is not stuck). Measured there, inside the sync, it costs no step anything and
  holds whatever ``every`` is (a sampled step may come only after the first sync). A sync that
  comes before any optimizer step could have run (at the recorded step itself) leaves the record
  pending for the next one: no verdict without the later measurement.

A compiled model (``torch.compile``) gets no forward hooks (they would run inside the traced
graph): its record has no activation RMS, so only the identical-filter argument judges it.
Under DDP the RMS is averaged over the ranks at the read (every rank reaches one verdict).
A sharded (FSDP2) model is not recorded: each rank holds only some filters, so "every filter
identical" is not a local fact, and the monitor stays quiet on the initialisation rather
than guess.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .ddp import Reducer
from .hooks import ActivationProbe, HookSet, unit_dim
from .shard import local
from .window import InitLayer, InitRecord


def fan_in(weight: torch.Tensor) -> int:
    """``nn.init``'s fan-in: ``weight.shape[1]`` times the kernel's elements."""
    return int(weight.shape[1] * math.prod(weight.shape[2:])) if weight.dim() >= 2 else int(weight.numel())


def _norm_spread_mean(t: torch.Tensor, dim: int) -> torch.Tensor:
    rows = t.detach().float().movedim(dim, 0).reshape(t.shape[dim], -1)
    return torch.stack(
        [
            torch.linalg.vector_norm(rows),
            torch.linalg.vector_norm(rows - rows.mean(0, keepdim=True)),
            rows.mean(),
        ]
    )


def _rms(t: torch.Tensor) -> torch.Tensor:
    norm: torch.Tensor = torch.linalg.vector_norm(t.detach().float())
    return norm / math.sqrt(max(t.numel(), 1))


class InitProbe:
    """Records the first forward pass and the first sampled step of every conv/linear layer.

    Args:
        owners: weight parameter name -> (module path, module) of the conv/linear layers.
        activations: the collector's activation probe (which nonlinearity and normalisation
            follow each layer).
        enabled: False records nothing (sharded models; see the module docstring).
        forward: record the first forward pass (False for compiled models).
        reducer: averages the activation RMS over DDP ranks.
    """

    def __init__(
        self,
        owners: dict[str, tuple[str, nn.Module]],
        activations: ActivationProbe,
        *,
        enabled: bool = True,
        forward: bool = True,
        reducer: Reducer | None = None,
    ) -> None:
        self._owners = {path: (param, module) for param, (path, module) in owners.items()}
        self._activations = activations
        self._reducer = reducer
        self._forward = forward
        self._order: list[str] = []
        self._rms: dict[str, torch.Tensor] = {}
        self._pending: torch.Tensor | None = None
        self._paths: list[str] = []
        self._step = 0
        self.record: InitRecord | None = None
        self._done = not enabled or not owners
        self._hooks = HookSet()
        if self._done or not forward:
            return
        for path, (_, module) in self._owners.items():
            self._hooks.add(module.register_forward_hook(self._make(path)))

    def _make(self, path: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if path in self._rms or not args or not isinstance(args[0], torch.Tensor):
                return
            if isinstance(output, torch.Tensor):
                with torch.no_grad():
                    self._rms[path] = torch.stack([_rms(args[0]), _rms(output)])
                self._order.append(path)

        return hook

    @torch.no_grad()
    def record_gradients(self, step: int) -> None:
        """At the first sampled step: weight and gradient norms and spreads, per layer (on the device)."""
        self._hooks.remove()  # the first forward is over
        if self._done:
            return
        self._done = True
        self._step = step
        rows, paths = [], []
        for path in self._order if self._forward else list(self._owners):
            param, module = self._owners[path]
            weight = getattr(module, "weight", None)
            if not isinstance(weight, torch.Tensor):
                continue
            w = local(weight)
            d = unit_dim(module)
            g = weight.grad
            grad = _norm_spread_mean(local(g), d)[:2] if g is not None else torch.full((2,), math.nan, device=w.device)
            rms = self._rms.get(path, torch.full((2,), math.nan))
            rows.append(torch.cat([_norm_spread_mean(w, d), grad.to(w.device), rms.to(w.device)]))
            paths.append(path)
        if rows:
            dev = rows[0].device
            self._pending = torch.stack([r.to(dev) for r in rows]).double()
            self._paths = paths
        self._rms.clear()

    def _weights(self) -> torch.Tensor:
        rows = []
        for path in self._paths:
            module = self._owners[path][1]
            assert isinstance(module.weight, torch.Tensor)
            rows.append(_norm_spread_mean(local(module.weight), unit_dim(module))[:2])
        dev = rows[0].device
        return torch.stack([r.to(dev) for r in rows]).double()

    @torch.no_grad()
    def read(self, step: int) -> InitRecord | None:
        """The record (built at the first call after :meth:`record_gradients` whose ``step`` is later, one
        host copy), with the weights measured again now.

        Args:
            step: the last step recorded (``Monitor.step`` is called before ``optimizer.step()``, so the
                weights now hold every update up to the one before it, that of the recorded step included
                when ``step`` is later).
        """
        if self.record is not None or self._pending is None or step <= self._step:
            return self.record
        later = self._weights()
        pending = self._pending
        if self._reducer is not None and self._reducer.enabled and self._reducer.world_size > 1:
            mean_square = self._reducer.sum_(pending[:, 5:7].square().contiguous()) / self._reducer.world_size
            pending = torch.cat([pending[:, :5], mean_square.sqrt()], dim=1)
        host = torch.cat([pending, later.to(pending.device)], dim=1).cpu().numpy()
        self._pending = None
        layers = []
        for path, row in zip(self._paths, host):
            param, module = self._owners[path]
            weight = module.weight
            assert isinstance(weight, torch.Tensor)
            layers.append(
                InitLayer(
                    name=path,
                    param=param,
                    kind=type(module).__name__,
                    activation=self._activations.activation(path),
                    normalized=self._activations.normalized(path),
                    fan_in=fan_in(weight),
                    units=int(weight.shape[unit_dim(module)]),
                    weight_norm=float(row[0]),
                    weight_spread=float(row[1]),
                    weight_mean=float(row[2]),
                    grad_norm=float(row[3]),
                    grad_spread=float(row[4]),
                    in_rms=float(row[5]),
                    out_rms=float(row[6]),
                    numel=int(weight.numel()),
                    later_weight_norm=float(row[7]),
                    later_weight_spread=float(row[8]),
                )
            )
        self.record = InitRecord(step=self._step, layers=tuple(layers), later_step=step)
        return self.record

    def state_dict(self) -> dict[str, Any] | None:
        """The record as plain values (None before it was read back)."""
        if self.record is None:
            return None
        return {
            "step": self.record.step,
            "later_step": self.record.later_step,
            "layers": [dict(vars(x)) for x in self.record.layers],
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore a record (a resumed run keeps judging the initialisation it started from)."""
        self._hooks.remove()
        self._done = True
        self._pending = None
        if state is not None:
            layers = tuple(InitLayer(**x) for x in state["layers"])
            self.record = InitRecord(int(state["step"]), layers, int(state["later_step"]))

    def remove(self) -> None:
        """Remove the forward hooks (idempotent)."""
        self._hooks.remove()
