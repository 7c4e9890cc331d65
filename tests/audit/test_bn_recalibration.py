"""The incident: trained weights loaded without the BatchNorm buffers (``strict=False``), proven
by the user's sample. Every number is checked against the test's own computation: its own
recalibration loop (BatchNorm in training mode with ``momentum=None``), its own accuracy count,
scipy's binomial test."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
from scipy.stats import binomtest
from torch import nn
from torch.nn import functional as F

from convdoctor._guard import state_dict_digest, training_flags
from convdoctor.audit import audit
from convdoctor.audit.bn_recalibration import RECAL_BATCH, _binomial_tail
from convdoctor.demo.training import digits
from convdoctor.findings import Severity


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


def resnet_tiny() -> nn.Module:
    """Stem and three residual blocks with BatchNorm, for 1x8x8 digits: seven BatchNorm layers."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        *[Block(16) for _ in range(3)],
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


@functools.cache
def _trained() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = resnet_tiny()
    x, y, _, _ = digits(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        idx = torch.randint(0, len(y), (32,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def converted() -> nn.Module:
    """The incident: a converted checkpoint without running_mean/running_var/num_batches_tracked."""
    kept = {
        k: v for k, v in _trained().items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }
    model = resnet_tiny()
    missing = model.load_state_dict(kept, strict=False).missing_keys
    assert len(missing) == 2 * 7  # BatchNorm fills a missing num_batches_tracked in silently (0)
    assert all(int(m.num_batches_tracked) == 0 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    return model.eval()


def own_recalibration(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The statistics recomputed by hand: batches as the docs state, BatchNorm inputs captured."""
    fresh = copy.deepcopy(model).eval()
    means: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, m in fresh.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
            m.train()
            hooks.append(
                m.register_forward_pre_hook(
                    lambda mod, a, name=name: means.setdefault(name, []).append(a[0].mean((0, 2, 3)))
                )
            )
    with torch.no_grad():
        for chunk in torch.tensor_split(x, math.ceil(len(x) / RECAL_BATCH)):
            fresh(chunk)
    for h in hooks:
        h.remove()
    return fresh.eval(), {k: torch.stack(v).mean(0) for k, v in means.items()}


def _val() -> tuple[torch.Tensor, torch.Tensor]:
    _, _, xv, yv = digits(0)
    return xv[:256], yv[:256]  # the audit keeps 256 samples by default


def _finding(report):  # type: ignore[no-untyped-def]
    (f,) = [f for f in report.findings if f.code == "BN_STATS_UNINITIALIZED"]
    return f


def test_with_targets_the_sample_proves_the_buffers_were_lost() -> None:
    xv, yv = _val()
    model = converted()
    f = _finding(audit(model, xv, targets=yv, checks="bn_stats"))
    assert f.severity is Severity.ERROR and f.evidence["evidence"] == "recalibration on the sample"
    r = f.evidence["recalibration"]
    with torch.no_grad():
        before = model(xv).argmax(1)
        fixed, stats = own_recalibration(model, xv)
        after = fixed(xv).argmax(1)
    assert r["accuracy_before"] == pytest.approx(float((before == yv).float().mean()))
    assert r["accuracy_after"] == pytest.approx(float((after == yv).float().mean()))
    assert r["accuracy_before"] < 0.3 and r["accuracy_after"] > 0.9  # tens of points, as in the incident
    w2r, r2w = int(((before != yv) & (after == yv)).sum()), int(((before == yv) & (after != yv)).sum())
    assert (r["wrong_to_right"], r["right_to_wrong"]) == (w2r, r2w)
    assert r["p_value"] == pytest.approx(binomtest(w2r, w2r + r2w, 0.5, alternative="greater").pvalue, rel=1e-6)
    layers = {lay["name"]: lay for lay in f.evidence["layers"]}
    assert set(layers) == set(stats) and len(layers) == 7
    for name, mean in stats.items():  # the inputs reaching each BatchNorm, against the loaded (0, 1)
        assert layers[name]["sample_mean_abs_max"] == pytest.approx(float(mean.abs().max()), rel=1e-5)
        assert layers[name]["mean_shift"] == pytest.approx(float(mean.square().mean().sqrt()), rel=1e-3)
        assert layers[name]["running_mean_abs_max"] == 0 and layers[name]["running_var_median"] == 1
    assert "accuracy" in f.message and "recalibrate_bn" in f.fix


def test_without_targets_changed_and_confident_predictions_prove_it() -> None:
    xv, _ = _val()
    model = converted()
    f = _finding(audit(model, xv, checks="bn_stats"))
    assert f.severity is Severity.ERROR
    r = f.evidence["recalibration"]
    with torch.no_grad():
        before = model(xv)
        fixed, _ = own_recalibration(model, xv)
        after = fixed(xv)
    assert r["agreement"] == pytest.approx(float((before.argmax(1) == after.argmax(1)).float().mean()))
    top = float(after.softmax(1).max(1).values.mean())
    assert r["confidence_after"] == pytest.approx((top - 0.1) / 0.9, rel=1e-5)
    assert r["top_class_share_after"] == pytest.approx(float(after.argmax(1).bincount().max()) / len(xv))
    assert r["agreement"] < 0.5 and "accuracy_before" not in r


@pytest.mark.parametrize("targets", [True, False], ids=["targets", "no-targets"])
def test_a_fresh_model_stays_info(targets: bool) -> None:
    """The same architecture untrained: recalibrating changes nothing that matters."""
    xv, yv = _val()
    torch.manual_seed(1)
    f = _finding(audit(resnet_tiny().eval(), xv, targets=yv if targets else None, checks="bn_stats"))
    assert f.severity is Severity.INFO and f.evidence["untrained_model"] is True
    assert "recalibration" in f.evidence  # measured, and not proof


def test_the_users_model_is_left_bit_identical() -> None:
    xv, yv = _val()
    model = converted()
    model.bn_mode_probe = True  # type: ignore[attr-defined]
    model[4].train()  # one block in another mode than the rest
    digest, flags = state_dict_digest(model), training_flags(model)
    saved = copy.deepcopy(model.state_dict())
    for t in (yv, None):
        audit(model, xv, targets=t, checks="bn_stats")
    assert state_dict_digest(model) == digest and training_flags(model) == flags
    for k, v in saved.items():
        assert torch.equal(model.state_dict()[k], v), k


@pytest.mark.parametrize(("k", "n"), [(0, 0), (9, 9), (10, 10), (30, 41), (5, 12)])
def test_mcnemar_tail_matches_scipy(k: int, n: int) -> None:
    want = binomtest(k, n, 0.5, alternative="greater").pvalue if n else 1.0
    assert _binomial_tail(k, n) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("targets", [True, False], ids=["targets", "no-targets"])
def test_a_sample_too_small_to_prove_anything_skips_the_copy(targets: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from convdoctor.audit import bn_recalibration as recal

    fewest = recal.BN_MIN_SAMPLES_WITH_TARGETS if targets else recal.BN_MIN_SAMPLES
    if targets:  # one sample fewer cannot reach the p-value even if every changed sample went wrong -> right
        k = fewest - 1
        assert binomtest(k, k, 0.5, alternative="greater").pvalue >= recal.BN_P_VALUE
        assert binomtest(fewest, fewest, 0.5, alternative="greater").pvalue < recal.BN_P_VALUE
    calls: list[int] = []
    real = recal.recalibrate_bn
    monkeypatch.setattr(recal, "recalibrate_bn", lambda *a, **k: calls.append(1) or real(*a, **k))
    xv, yv = _val()
    for n, runs in ((fewest - 1, False), (fewest, True)):
        calls.clear()
        f = _finding(audit(converted(), xv[:n], targets=yv[:n] if targets else None, checks="bn_stats"))
        assert bool(calls) == runs and ("recalibration" in f.evidence) == runs, (n, f.evidence)
        if not runs:
            assert f.severity is not Severity.ERROR  # not proven: never an error
