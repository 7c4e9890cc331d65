"""Models nobody here wrote: timm, segmentation-models-pytorch, torchvision seg/video/flow.

Each figure is checked against an oracle that shares no code with convdoctor:

* params: ``sum(p.numel())``;
* MACs: ``torch.utils.flop_counter.FlopCounterMode`` on a real forward (FLOPs = 2 x MACs),
  attention unfused (timm's ``set_fused_attn(False)`` before building, and the math SDPA
  backend) so that its matrix products are counted;
* receptive field: autograd (the gradient method) on a layer whose field fits the input;
* audit: an eval-mode model with random weights has nothing wrong with it, so no error
  finding and no ``FUSION_MISMATCH``, and its state_dict and flags compare equal to a
  copy taken here (``torch.equal``, not convdoctor's digest).

Tolerances: the audit's (``BATCH_RTOL``, ``DETERMINISM_RTOL``, ``FUSION_RTOL``) were
calibrated on torchvision's classifiers (``tests/audit/test_torchvision_sweep.py``); this
zoo is the second, independent set they are verified on, with a 10x margin: the largest
difference measured here must stay under a tenth of each tolerance.
"""

from __future__ import annotations

import pytest
import timm.layers
import torch
import torchvision.models as tvm
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from convdoctor import audit, inspect, receptive_field
from convdoctor.audit.batch import BATCH_RTOL
from convdoctor.audit.determinism import DETERMINISM_RTOL
from convdoctor.audit.fusion import FUSION_RTOL
from convdoctor.findings import Severity
from tests.zoo.models import SMP_MODELS, TIMM_MODELS, TV_MODELS, Entry, timm_entry

pytestmark = pytest.mark.slow

ENTRIES: dict[str, Entry] = {e.name: e for e in [*(timm_entry(n) for n in TIMM_MODELS), *SMP_MODELS, *TV_MODELS]}

#: Audited in eval mode (15, the acceptance count): residual, depthwise/SE and norm-act (timm
#: BatchNormAct2d), RepVGG, ResNeSt, RegNetY, NF (no BatchNorm), HRNet, DLA, CSP, TResNet, ConvNeXt
#: (LayerNorm), an attention hybrid, smp and torchvision segmentation.
AUDITED = (
    "resnet10t",
    "efficientnet_lite0",
    "ghostnet_050",
    "regnety_002",
    "repvgg_a0",
    "resnest14d",
    "nf_resnet26",
    "hrnet_w18_small",
    "dla46_c",
    "darknet17",
    "tresnet_m",
    "convnext_atto",
    "mobilevit_xxs",
    "smp.Unet(resnet18)",
    "torchvision.lraspp_mobilenet_v3_large",
)
#: Layer whose central field lies inside a 128x128 input (so autograd measures all of it).
RF_SHAPE = (1, 3, 128, 128)
#: (TResNet's space-to-depth stem and HRNet's upsampling have their own tests in tests/rf/test_timm_rf.py.)
RF_LAYERS = {"resnet10t": "layer1", "efficientnet_lite0": "blocks.1", "dla46_c": "level2", "convnext_atto": "stages.0"}
AUDIT_CHECKS = ("modes", "batch", "determinism", "bn_stats", "fusion")


@pytest.fixture(scope="module", autouse=True)
def unfused_attention():
    """timm picks fused attention at construction; FlopCounterMode cannot see inside it."""
    config = timm.layers.config
    saved = config._USE_FUSED_ATTN
    timm.layers.set_fused_attn(False)
    yield
    config._USE_FUSED_ATTN = saved


def test_zoo_meets_the_acceptance_counts() -> None:
    families = {TIMM_MODELS[n][0] for n in TIMM_MODELS}
    assert len(TIMM_MODELS) >= 50 and len(families) >= 25, (len(TIMM_MODELS), sorted(families))
    assert len(SMP_MODELS) >= 8
    every = {n for m in (tvm.segmentation, tvm.video, tvm.optical_flow) for n in tvm.list_models(module=m)}
    assert {e.name.removeprefix("torchvision.") for e in TV_MODELS} == every
    assert len(AUDITED) >= 15 and set(AUDITED) <= set(ENTRIES) and set(RF_LAYERS) <= set(ENTRIES)


def _oracle_flops(model: torch.nn.Module, xs: tuple[torch.Tensor, ...]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(*xs)
    return int(counter.get_total_flops())


def _state(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], list[bool]]:
    return ({k: v.detach().clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()])


def _same(model: torch.nn.Module, before: tuple[dict[str, torch.Tensor], list[bool]]) -> bool:
    now = model.state_dict()
    return (
        now.keys() == before[0].keys()
        and all(torch.equal(now[k], v) for k, v in before[0].items())
        and [m.training for m in model.modules()] == before[1]
    )


@pytest.mark.parametrize("name", list(ENTRIES))
def test_inspect_matches_the_oracles(name: str) -> None:
    entry = ENTRIES[name]
    model = entry.build()
    xs = entry.inputs()
    report = inspect(model, example_input=xs if len(xs) > 1 else xs[0])
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    oracle = _oracle_flops(model, xs)
    assert oracle > 0 and abs(2 * report.totals["macs"] - oracle) <= 1e-3 * oracle, (2 * report.totals["macs"], oracle)
    if name in AUDITED:
        _audit_is_clean(entry, model)


def _audit_is_clean(entry: Entry, model: torch.nn.Module) -> None:
    before = _state(model)
    x = torch.randn(2, *entry.shapes[0][1:], generator=torch.Generator().manual_seed(1))
    report = audit(model, x, batch_sizes=(1, 2), checks=AUDIT_CHECKS)
    assert _same(model, before), "audit changed the model"
    bad = [
        f"{f.code}: {f.message}" for f in report.findings if f.severity is Severity.ERROR or f.code == "FUSION_MISMATCH"
    ]
    assert not bad, bad
    # the tolerances calibrated on torchvision hold here with a 10x margin
    runs = report.check("batch").evidence.get("runs", [])
    assert all(r["max_rel_diff"] <= BATCH_RTOL / 10 for r in runs), runs
    assert report.check("determinism").evidence["max_rel_diff"] <= DETERMINISM_RTOL / 10
    fusion = report.check("fusion").evidence
    assert fusion.get("max_rel_diff", 0.0) <= FUSION_RTOL / 10, fusion


@pytest.mark.parametrize("name", list(RF_LAYERS))
def test_receptive_field_matches_autograd(name: str) -> None:
    entry = ENTRIES[name]
    model, layer = entry.build(), RF_LAYERS[name]
    analytic = receptive_field(model, RF_SHAPE, layer=layer).layer(layer)
    measured = receptive_field(model, RF_SHAPE, layer=layer, method="gradient").layers[0]
    assert measured.clipped == (False, False), "pick a layer whose field fits the input"
    assert all(isinstance(v, int) for v in (*analytic.size, *analytic.start))
    if analytic.exact:
        assert analytic.size == measured.size and analytic.jump == measured.jump
    else:
        assert all(a >= m for a, m in zip(analytic.size, measured.size))
