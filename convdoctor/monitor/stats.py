"""The cheap collector: records tensors on the device, reads them back once per sync.

Every step costs a detach of the loss and, given outputs, an argmax plus two
``scatter_add_`` class counts: a handful of kernels and no device-to-host copy. Every
``every`` steps the collector adds the costly statistics: gradient and weight norms
(``torch``'s multi-tensor norm), per-unit gradient norms of conv and linear weights (which update
a per-unit "last step with a non-zero gradient" tensor in place), and every
``UPDATE_EVERY``-th sample the optimizer step's update-to-weight ratio per parameter group.
Nothing is copied to the host until :meth:`Collector.sync`, which runs every
``SYNC_EVERY`` steps, packs the interval into one tensor (one ``all_reduce`` under DDP,
one copy to the host) and returns a :class:`~convdoctor.monitor.window.Window` for the rules.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
import torch
from torch import nn

from .._compat import foreach_norm, foreach_sub
from ..errors import UsageError
from ._pack import pack_samples, pack_steps, pack_updates, sum_together
from ._tensors import pack, rows, same_device, unpack
from .batch import EXTRA, batch_counts, scalar_loss
from .bn_drift import FrozenBNTracker
from .ddp import Reducer
from .hooks import ActivationProbe, BNProbe, DepthOrder, unit_dim, unit_owners, unwrap
from .readback import HostHistory
from .shard import layout, local
from .window import FrozenBN, Units, Window

#: Steps between host syncs (and rule evaluations). A finding can lag by at most this many
#: steps; 25 keeps the sync cost (one small copy) negligible even on a GPU.
SYNC_EVERY = 25
#: Update-to-weight ratios need a copy of the weights before ``optimizer.step()``, which
#: costs about as much as every other statistic together; ratios move slowly, so they are
#: measured on every 10th sampled step.
UPDATE_EVERY = 10
#: Steps of loss / prediction history the rules can see.
STEP_KEEP = 512
#: Sampled steps of gradient history the rules can see.
SAMPLE_KEEP = 256


class Collector(HostHistory):
    """Records one run's statistics. :class:`~convdoctor.monitor.Monitor` owns one.

    Args:
        model: the module being trained (DDP / compile wrappers are unwrapped for names).
        num_classes: classes of the output, or None to read them from the first outputs.
        every: sample costly statistics every ``every`` steps.
        reducer: cross-rank reduction (a no-op outside DDP).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int | None,
        every: int,
        reducer: Reducer,
        ignore_index: int | None = -100,
    ) -> None:
        self.model = unwrap(model)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.every = every
        self.reducer = reducer
        self.step = 0
        self.params: list[tuple[str, nn.Parameter]] = list(self.model.named_parameters())
        self._owner = unit_owners(self.model)
        self._order: DepthOrder | None = DepthOrder(self.model)
        self.activations = ActivationProbe(self.model, {m: path for path, m in self._owner.values()})
        self.layout = layout(self.params, {n: unit_dim(m) for n, (_, m) in self._owner.items()}, reducer.world_size)
        self._share = {id(q): self.layout.share[n] for n, q in self.params}
        self.bn_probe = BNProbe(self.model, reducer.world_size)
        self.bn_drift = FrozenBNTracker(self.model)
        self._last_alive: dict[str, torch.Tensor] = {}
        self.no_grad = [0] * len(self.params)
        self._pending: dict[str, list[Any]] = _new_pending()
        self._steps: dict[str, deque[Any]] = {k: deque(maxlen=STEP_KEEP) for k in ("loss", "pred", "tgt", "bad", "bn")}
        self._samples: dict[str, deque[Any]] = {
            k: deque(maxlen=SAMPLE_KEEP) for k in ("step", "gn", "wn", "present", "ustep", "ratio", "lr")
        }
        self.group_names: tuple[str, ...] = ()
        self.group_lr_max: list[float] = []
        self.loss_initial = math.nan
        self.loss_best, self.loss_best_step = math.nan, 0
        self.grad_norm_initial = math.nan
        self.epoch_correct = self.epoch_seen = self.epoch_loss_sum = self.epoch_loss_n = 0.0
        self.plot: dict[str, list[Any]] = {"loss_step": [], "loss": [], "grad_step": [], "grad": []}
        self._stride = {"loss": 1, "grad": 1}
        self._snapshot: list[list[torch.Tensor]] | None = None
        self._snapshot_step = 0
        self._opt_hook: Any = None
        self._opt_id: int | None = None

    # ----------------------------------------------------------------- recording
    def record_batch(self, loss: Any, outputs: Any = None, targets: Any = None) -> None:
        """Record one step's loss and class counts (no device sync) and advance the step."""
        self._finish_order()
        loss_t = scalar_loss(loss)
        counts, batch, self.num_classes = batch_counts(outputs, targets, self.num_classes, self.ignore_index)
        p = self._pending
        p["loss"].append(loss_t)
        p["batch"].append(batch)
        p["counts"].append(counts)
        p["bn"].append(self.bn_probe.read())
        self.step += 1

    @torch.no_grad()
    def record_gradients(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """On sampled steps, record gradient/weight norms, dead-unit state and (maybe) updates."""
        self._finish_order()
        if self.step % self.every or not self.params:
            return
        present = [p.requires_grad and p.grad is not None for _, p in self.params]
        trainable = [p.requires_grad for _, p in self.params]
        if any(trainable) and not any(present):
            raise UsageError(
                "Monitor.step() found no gradient on any trainable parameter: call it after "
                "loss.backward() and before optimizer.step() / zero_grad()"
            )
        self.no_grad = [n + 1 if t and not ok else 0 for n, t, ok in zip(self.no_grad, trainable, present)]
        norms = self._grad_norms(present)
        weights = [w.float() for w in foreach_norm([local(p.detach()) for _, p in self.params])]
        p = self._pending
        p["gstep"].append(self.step)
        p["gn"].append(torch.stack(same_device(norms)))
        p["wn"].append(torch.stack(same_device(weights)))
        p["present"].append(present)
        if optimizer is not None and (self.step // self.every) % UPDATE_EVERY == 0:
            self._snapshot_weights(optimizer)

    def _grad_norms(self, present: list[bool]) -> list[torch.Tensor]:
        """Per-parameter gradient norms; conv/linear weights also update their dead-unit state."""
        out: list[torch.Tensor | None] = [None] * len(self.params)
        plain = []
        for i, ((name, p), ok) in enumerate(zip(self.params, present)):
            if not ok:
                continue
            owner, start = self._owner.get(name), self.layout.unit_offset.get(name, 0)
            if owner is None or start is None:
                plain.append(i)
                continue
            assert p.grad is not None  # present[i] says so
            d = unit_dim(owner[1])
            grad = local(p.grad)
            per_unit = torch.linalg.vector_norm(grad.movedim(d, 0).reshape(grad.shape[d], -1).float(), dim=1)
            alive = self._last_alive.get(name)
            if alive is None:  # every unit of the layer, also those other ranks hold (see .shard)
                alive = self._last_alive[name] = torch.full(
                    (int(p.shape[d]),), self.step - 1, dtype=torch.int64, device=per_unit.device
                )
            # NaN is not zero: a unit with a NaN gradient is broken, not dead (NAN_LOSS names it)
            alive[start : start + per_unit.numel()].masked_fill_(per_unit != 0, self.step)
            out[i] = torch.linalg.vector_norm(per_unit)
        if plain:
            plain_grads = [local(g) for g in (self.params[i][1].grad for i in plain) if g is not None]
            for i, n in zip(plain, foreach_norm(plain_grads)):
                out[i] = n.float()
        zero = torch.zeros((), device=self.params[0][1].device) if self.params else torch.zeros(())
        return [n if n is not None else zero for n in out]

    def _snapshot_weights(self, optimizer: torch.optim.Optimizer) -> None:
        """Copy the weights before ``optimizer.step()``; its post-hook measures the update."""
        if self._opt_id != id(optimizer):
            if self._opt_hook is not None:
                self._opt_hook.remove()
            self._opt_hook = optimizer.register_step_post_hook(self._after_optimizer_step)
            self._opt_id = id(optimizer)
        groups = optimizer.param_groups
        self.group_names = tuple(str(g.get("name", f"group{i}")) for i, g in enumerate(groups))
        self._snapshot = [[local(q.detach()).clone() for q in g["params"] if q.requires_grad] for g in groups]
        self._snapshot_step = self.step

    @torch.no_grad()
    def _after_optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Optimizer post-hook: ``||w_after - w_before||^2`` and ``||w_after||^2`` per parameter group
        (weighted sums of squares, so that shards add up across ranks; the ratio is taken at the sync)."""
        if self._snapshot is None:
            return
        squares, lrs = [], []
        for old, group in zip(self._snapshot, optimizer.param_groups):
            params = [q for q in group["params"] if q.requires_grad]
            new = [local(q.detach()) for q in params]
            if not old or len(old) != len(new):
                squares.append(torch.zeros(2, device=old[0].device if old else "cpu"))
            else:
                upd = torch.stack(same_device(foreach_norm(foreach_sub(old, new)))).float()
                now = torch.stack(same_device(foreach_norm(new))).float()
                if self.layout.sharded:  # weight each square by its share (fills: no host-to-device copy)
                    root = torch.stack(
                        [torch.full_like(upd[0], math.sqrt(self._share.get(id(q), 1.0))) for q in params]
                    )
                    upd, now = upd * root, now * root
                squares.append(torch.stack([(upd * upd).sum(), (now * now).sum()]))
            lrs.append(float(group.get("lr", 0.0)))
        self._pending["ustep"].append(self._snapshot_step)
        self._pending["ratio"].append(torch.stack(same_device(squares)).double())
        self._pending["lr"].append(lrs)
        self._snapshot = None

    # ----------------------------------------------------------------- sync
    def sync(self, epochs: tuple[Any, ...] = ()) -> Window:
        """Read the interval back (:meth:`pull`), measure frozen BatchNorm drift, build the window."""
        self.pull()
        return self.window(self.bn_drift.measure(self.step), epochs)

    def pull(self) -> None:
        """Copy the pending records to the host: one all-reduce across ranks, one device sync.

        Under DDP only the per-step records are summed (gradients and weights are the same on
        every rank); under FSDP2 the sampled sums of squares join the same all-reduce.
        """
        p = self._pending
        share = [self.layout.share[n] for n, _ in self.params] if self.layout.sharded else None
        steps = pack_steps(p["loss"], p["batch"], p["counts"], 2 * (self.num_classes or 0) + EXTRA)
        samples, updates = pack_samples(p["gn"], p["wn"], share), pack_updates(p["ratio"])
        if self.layout.sharded:
            steps, samples, updates = sum_together(self.reducer, [steps, samples, updates])
        else:  # DDP: gradients and weights are the same on every rank already
            steps = sum_together(self.reducer, [steps])[0]
        if steps is not None:
            self._read_steps(steps.cpu().numpy())
        if samples is not None:
            host = samples.cpu().numpy()
            if self.layout.sharded:  # weighted sums of squares -> norms
                host = np.sqrt(host)
            self._read_samples(host)
        if updates is not None:
            self._read_updates(updates.cpu().numpy())
        for k in p:
            p[k].clear()

    # ----------------------------------------------------------------- window
    def window(self, frozen_bn: tuple[FrozenBN, ...] = (), epochs: tuple[Any, ...] = ()) -> Window:
        """The rules' view of the recorded history (call after :meth:`sync`)."""
        c = self.num_classes or 0
        steps, samples = self._steps, self._samples
        prows = [r if r.shape == (c,) else np.zeros(c, dtype=np.int64) for r in steps["pred"]]
        trows = [r[:c] if r.shape[0] >= c else np.zeros(c, dtype=np.int64) for r in steps["tgt"]]
        bad = rows(steps["bad"], EXTRA - 1).astype(np.int64)
        bn = np.array([(b or 0, n) for b, n in steps["bn"]], dtype=np.int64).reshape(-1, 2)
        p = len(self.params)
        return Window(
            step=self.step,
            num_classes=self.num_classes,
            every=self.every,
            loss=np.asarray(steps["loss"], dtype=np.float64),
            loss_start=self.step - len(steps["loss"]),
            loss_initial=self.loss_initial,
            loss_best=self.loss_best,
            loss_best_step=self.loss_best_step,
            preds=np.stack(prows) if prows else np.zeros((0, c), dtype=np.int64),
            targets=np.stack(trows) if trows else np.zeros((0, c), dtype=np.int64),
            target_bad=bad,
            bn_batch=bn[:, 0],
            bn_layers=bn[:, 1],
            grad_steps=np.asarray(samples["step"], dtype=np.int64),
            param_names=tuple(n for n, _ in self.params),
            param_is_weight=np.array([n in self._owner for n, _ in self.params], dtype=bool),
            grad_norms=rows(samples["gn"], p),
            weight_norms=rows(samples["wn"], p),
            grad_present=rows(samples["present"], p).astype(bool),
            no_grad=np.asarray(self.no_grad, dtype=np.int64),
            grad_norm_initial=self.grad_norm_initial,
            units=self._units(),
            group_names=self.group_names,
            update_steps=np.asarray(samples["ustep"], dtype=np.int64),
            update_ratio=rows(samples["ratio"], len(self.group_names)),
            group_lr=rows(samples["lr"], len(self.group_names)),
            group_lr_max=np.asarray(self.group_lr_max, dtype=np.float64),
            frozen_bn=frozen_bn,
            epochs=tuple(epochs),
        )

    def _units(self) -> tuple[Units, ...]:
        if not self._last_alive or not self._samples["step"]:
            return ()
        last = int(self._samples["step"][-1])
        names = list(self._last_alive)
        flat_t = torch.cat([t.to(self._last_alive[names[0]].device) for t in self._last_alive.values()])
        if self.layout.sharded:  # each rank wrote the units it holds: the latest step alive is the MAX
            flat_t = self.reducer.max_(flat_t.clone())
        flat = flat_t.cpu().numpy()
        out, at = [], 0
        for name in names:
            n = self._last_alive[name].numel()
            path, module = self._owner[name]
            out.append(
                Units(
                    path,
                    last - flat[at : at + n],
                    type(module).__name__,
                    self.activations.activation(path),
                    self.activations.can_die(path),
                )
            )
            at += n
        return tuple(out)

    @property
    def weight_names(self) -> set[str]:
        """Names of the conv/linear weights (the parameters with output units)."""
        return set(self._owner)

    # ----------------------------------------------------------------- helpers
    def _finish_order(self) -> None:
        """After the first forward, sort parameters by the depth at which their module ran."""
        if self._order is None:
            return
        order = {path: i for i, path in enumerate(self._order.order)}
        self._order.remove()
        self._order = None
        self.params.sort(key=lambda kv: order.get(kv[0].rpartition(".")[0], len(order)))

    # ----------------------------------------------------------------- state
    _SCALARS = (
        "step",
        "num_classes",
        "every",
        "no_grad",
        "group_lr_max",
        "loss_initial",
        "loss_best",
        "loss_best_step",
        "grad_norm_initial",
        "epoch_correct",
        "epoch_seen",
        "epoch_loss_sum",
        "epoch_loss_n",
        "plot",
        "_stride",
    )

    @property
    def pending(self) -> int:
        """Steps recorded but not yet read back."""
        return len(self._pending["loss"])

    def state_dict(self) -> dict[str, Any]:
        """Everything read back so far, as tensors and plain values (loads with ``weights_only=True``)."""
        state: dict[str, Any] = {k.lstrip("_"): getattr(self, k) for k in self._SCALARS}
        state["params"] = [n for n, _ in self.params]
        state["group_names"] = list(self.group_names)
        state["last_alive"] = {k: v.detach().cpu() for k, v in self._last_alive.items()}
        state["steps"] = {k: pack(v) for k, v in self._steps.items()}
        state["samples"] = {k: pack(v) for k, v in self._samples.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from a monitor of the same model."""
        names = state.get("params", [])
        if sorted(names) != sorted(n for n, _ in self.params):
            raise UsageError(
                "Monitor state is from a model with different parameters; load it into a monitor of the same model"
            )
        for k in self._SCALARS:
            setattr(self, k, state[k.lstrip("_")])
        rank = {n: i for i, n in enumerate(names)}
        self.params.sort(key=lambda kv: rank[kv[0]])
        if self._order is not None:
            self._order.remove()
            self._order = None
        self.group_names = tuple(state["group_names"])
        dev = {n: p.device for n, p in self.params}
        self._last_alive = {k: v.to(dev[k]) for k, v in state["last_alive"].items()}
        for key, target in (("steps", self._steps), ("samples", self._samples)):
            for k, v in state[key].items():
                target[k].clear()
                target[k].extend(unpack(v))

    def close(self) -> None:
        """Remove every hook the collector installed (idempotent)."""
        if self._order is not None:
            self._order.remove()
            self._order = None
        self.bn_probe.remove()
        self.activations.remove()
        if self._opt_hook is not None:
            self._opt_hook.remove()
            self._opt_hook, self._opt_id = None, None


# --------------------------------------------------------------------- module helpers
def _new_pending() -> dict[str, list[Any]]:
    keys = ("loss", "batch", "counts", "bn", "gstep", "gn", "wn", "present", "ustep", "ratio", "lr")
    return {k: [] for k in keys}
