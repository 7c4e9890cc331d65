"""Modes: modules left in training mode whose behaviour differs at inference.

BatchNorm (with running statistics) and dropout are recognised by class; any other module
in training mode whose class can read its flag is tested: it is run twice on the inputs it
received in a real forward, once as it is and once with only its own ``training`` flag
cleared. If the outputs differ, its own code branches on ``self.training`` (torchvision's
``StochasticDepth``, a custom layer, GoogLeNet's auxiliary heads) and ``TRAIN_MODE_DIFFERS``
names it.

"Can read its flag": the source of its class, or of a base class below ``nn.Module``,
mentions ``training``, or cannot be read (then it is tested). A module's own flag is only
visible to its own code, so skipping the others (``Conv2d``, ``ReLU``, a ResNet block) loses
nothing and keeps a training-mode GoogLeNet from being replayed level by level.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from typing import Any

import torch
from torch import nn

from ..findings import Finding, make_finding
from ._tensors import diff, leaves, logits, structure
from .context import BN_TYPES, DROPOUT_TYPES, CheckContext, label
from .registry import register_check

#: Samples used to measure what eval mode changes; >= 2 so BatchNorm1d can run in training mode.
MODES_BATCH = 4
#: A module "differs" between modes beyond this fraction of its output's scale (float32
#: reruns of the same op on the same input are bitwise equal on CPU; 1e-4 leaves room for
#: nondeterministic GPU kernels).
MODE_RTOL = 1e-4
#: Names listed in a finding's evidence.
MAX_NAMES = 10

_FIX_EVAL = (
    "Call model.eval() before inference, or serve convdoctor.fix.prepare_for_inference(model), an eval-mode copy"
)


_TRAINING = re.compile(r"\btraining\b")


@functools.cache
def _may_read_flag(cls: type) -> bool:
    """Whether code of ``cls`` (or a base below nn.Module) can read ``self.training``."""
    for klass in cls.__mro__:
        if klass in (nn.Module, object):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # built in C, generated, or source not shipped: test it
            return True
        if _TRAINING.search(source):
            return True
    return False


def _eval_effect(ctx: CheckContext, x: torch.Tensor) -> dict[str, Any]:
    """How much switching the whole model to eval changes its output on ``x``."""
    with ctx.modes(all_eval=True):
        out_eval = ctx.forward(x)  # first: the training-mode run below updates running stats
    out_now = ctx.forward(x)
    d = diff(leaves(out_now), leaves(out_eval))
    effect: dict[str, Any] = {"samples": int(x.shape[0]), **d.as_dict()}
    if d.max_rel == float("inf"):
        effect["structure"] = f"{structure(out_now)} in training mode vs {structure(out_eval)} in eval"
    read = ctx.scores or logits
    a, b = read(out_now), read(out_eval)
    if a is not None and b is not None and a.shape == b.shape:
        effect["top1_changed"] = int((a.argmax(1) != b.argmax(1)).sum())
    return effect


def _effect_text(effect: dict[str, Any]) -> str:
    if "structure" in effect:
        return f"switching the model to eval changes the output itself ({effect['structure']})"
    text = (
        f"on {effect['samples']} samples, switching the model to eval changes the output by up to "
        f"{effect['max_abs_diff']:.3g} ({effect['max_rel_diff']:.2g} of its scale)"
    )
    if "top1_changed" in effect:
        text += f" and the top-1 class of {effect['top1_changed']} of {effect['samples']}"
    return text


def _names(model: nn.Module, paths: list[str]) -> str:
    shown = ", ".join(label(model, p) for p in paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _capture_inputs(ctx: CheckContext, x: torch.Tensor, paths: set[str]) -> dict[str, tuple[Any, Any]]:
    """The (args, kwargs) of the first call of each module in ``paths``, copied before it runs."""
    seen: dict[str, tuple[Any, Any]] = {}
    handles = []

    def hook_for(path: str) -> Any:
        def hook(_m: nn.Module, args: Any, kwargs: Any) -> None:
            if path not in seen:
                try:
                    seen[path] = copy.deepcopy((args, kwargs))
                except Exception:  # an argument that cannot be copied: this module is not replayed
                    pass

        return hook

    try:
        for path, m in ctx.model.named_modules():
            if path in paths:
                handles.append(m.register_forward_pre_hook(hook_for(path), with_kwargs=True))
        ctx.forward(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _own_flag_effect(module: nn.Module, inputs: tuple[Any, Any]) -> dict[str, Any] | None:
    """Output difference when only this module's flag goes to eval (None if it does not replay)."""
    try:
        with torch.no_grad():
            args, kwargs = copy.deepcopy(inputs)
            out_train = module(*args, **kwargs)
            module.training = False
            args, kwargs = copy.deepcopy(inputs)
            out_eval = module(*args, **kwargs)
    except Exception:  # a module that cannot be called on its own is left to the other checks
        return None
    finally:
        module.training = True
    d = diff(leaves(out_eval), leaves(out_train))
    if not d.exceeds(MODE_RTOL):
        return None
    found = {"type": type(module).__name__, **d.as_dict()}
    if d.max_rel == float("inf"):
        found["structure"] = f"{structure(out_train)} vs {structure(out_eval)}"
    return found


def _other_modules(ctx: CheckContext, training: list[tuple[str, nn.Module]], x: torch.Tensor) -> list[Finding]:
    """TRAIN_MODE_DIFFERS for modules (not BN, not dropout) whose own flag changes their output."""
    candidates = {p: m for p, m in training if not isinstance(m, (BN_TYPES, DROPOUT_TYPES)) and _may_read_flag(type(m))}  # type: ignore[arg-type]  # classes hash; torch's stubs hide it
    if not candidates:
        return []
    with ctx.modes(dropout_eval=True):  # dropout is reported on its own; keep it out of the replay
        try:
            inputs = _capture_inputs(ctx, x, set(candidates))
        except RuntimeError:  # TorchScript modules take no Python hooks
            ctx.evidence["other_modules"] = "not tested: hooks unavailable (TorchScript?)"
            return []
        differing = {
            p: e for p in candidates if p in inputs and (e := _own_flag_effect(candidates[p], inputs[p])) is not None
        }
    ctx.evidence["other_modules_tested"] = len(inputs)
    if not differing:
        return []
    paths = list(differing)
    worst = max(differing.values(), key=lambda e: e["max_rel_diff"])
    how = (
        f"output structure {worst['structure']}"
        if "structure" in worst
        else f"up to {worst['max_rel_diff']:.2g} of the output's scale"
    )
    return [
        make_finding(
            "TRAIN_MODE_DIFFERS",
            f"{len(paths)} module(s) in training mode give a different output in eval mode "
            f"({_names(ctx.model, paths)}): {how}.",
            evidence={"count": len(paths), "modules": [{"name": p, **differing[p]} for p in paths[:MAX_NAMES]]},
            fix=f"{_FIX_EVAL}; if a module is meant to stay stochastic at inference (MC dropout), say so in its docs.",
            where=paths[0],
        )
    ]


@register_check(
    "modes",
    summary="no BatchNorm, dropout or other module left in training mode",
    codes=("BN_TRAIN_MODE", "DROPOUT_TRAIN_MODE", "TRAIN_MODE_DIFFERS"),
    order=10,
)
def check_modes(ctx: CheckContext) -> list[Finding]:
    """Find modules in training mode whose output would change in eval mode."""
    training = ctx.training_modules()
    all_bn = [p for p, m in ctx.model.named_modules() if isinstance(m, BN_TYPES)]
    bn = [p for p, m in training if isinstance(m, BN_TYPES) and m.track_running_stats]
    drop = [p for p, m in training if isinstance(m, DROPOUT_TYPES) and m.p > 0]
    ctx.evidence.update(
        training_modules=len(training),
        batchnorm_training=len(bn),
        batchnorm_total=len(all_bn),
        dropout_training=len(drop),
    )
    if not training:
        return []
    x = ctx.take(max(MODES_BATCH, 2))
    effect = _eval_effect(ctx, x)
    ctx.evidence["eval_effect"] = effect
    findings: list[Finding] = []
    if bn:
        findings.append(
            make_finding(
                "BN_TRAIN_MODE",
                f"{len(bn)} of {len(all_bn)} BatchNorm layers are in training mode ({_names(ctx.model, bn)}): they "
                f"normalise each batch with its own statistics, so outputs depend on the batch; {_effect_text(effect)}.",
                evidence={"count": len(bn), "total": len(all_bn), "modules": bn[:MAX_NAMES], **effect},
                fix=_FIX_EVAL + ".",
                where=bn[0],
            )
        )
    if drop:
        findings.append(
            make_finding(
                "DROPOUT_TRAIN_MODE",
                f"{len(drop)} dropout module(s) are active ({_names(ctx.model, drop)}): predictions are random; "
                f"{_effect_text(effect)}.",
                evidence={"count": len(drop), "modules": drop[:MAX_NAMES], **effect},
                fix=_FIX_EVAL + ".",
                where=drop[0],
            )
        )
    findings.extend(_other_modules(ctx, training, x))
    return findings
