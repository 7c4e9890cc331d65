"""Torchvision models: published fields, and analytic == autograd on the last feature layer.

Published figures: Araujo, Norris and Sim, "Computing Receptive Fields of Convolutional
Neural Networks" (Distill 2019), table for TF-slim models, where the definitions agree
with torchvision's (AlexNet's conv/pool stack, VGG16, Inception-v3). ResNet differs:
torchvision (v1.5) puts the stride on the 3x3 conv of a bottleneck, TF-slim v1 on the 1x1,
so TF-slim's resnet_v1_50 field (483) is not torchvision's; the torchvision value is
pinned here and proven by the gradient sweep below.
"""

from __future__ import annotations

import contextlib
import time

import pytest
import torch
import torchvision.models as tvm

from convdoctor.analysis.rf.core import RFAnalysis, analyze
from convdoctor.analysis.rf.gradient import gradient_field
from convdoctor.capture.trace import capture

_KW = {
    "inception_v3": {"aux_logits": False, "init_weights": False},
    "googlenet": {"aux_logits": False, "init_weights": False},
}


def build(name: str) -> torch.nn.Module:
    """The torchvision model with random weights; on the meta device where its constructor allows."""
    meta = name != "regnet_y_400mf"  # its constructor computes widths with real tensor ops
    with torch.device("meta") if meta else contextlib.nullcontext():
        return tvm.get_model(name, weights=None, **_KW.get(name, {}))


def rf(name: str, shape: tuple[int, ...] = (1, 3, 224, 224)) -> RFAnalysis:
    return analyze(capture(build(name), (torch.empty(shape, device="meta"),)))


def sizes(analysis: RFAnalysis, layer: str) -> int:
    entry = analysis.layer(layer)
    assert entry is not None and entry.size[0] == entry.size[1], layer
    return int(entry.size[0])  # type: ignore[arg-type]


def test_alexnet_matches_the_published_table() -> None:
    a = rf("alexnet")
    # conv1, pool1, conv2, conv3, conv4, conv5, pool5 (TF-slim alexnet_v2 column of the Distill table)
    layers = ["features.0", "features.2", "features.3", "features.6", "features.8", "features.10", "features.12"]
    assert [sizes(a, n) for n in layers] == [11, 19, 51, 99, 131, 163, 195]
    assert a.layer("features.12").jump == (32, 32)


def test_vgg16_pools_sit_between_the_convs() -> None:
    a = rf("vgg16")
    assert sizes(a, "features.28") == 196  # conv5_3
    assert sizes(a, "features.30") == 212  # pool5, the published VGG16 figure
    # the classic wrong snippet (13 convs, then 4 pools) gives 1 + 13*2 = 27, then 27+1+2+4+8 = 42
    assert sizes(a, "features.30") != 42


def test_inception_v3_mixed_7c_matches_the_published_table() -> None:
    a = rf("inception_v3", (1, 3, 299, 299))
    assert sizes(a, "Mixed_7c") == 1311 and a.layer("Mixed_7c").jump == (32, 32)


def test_mobilenet_v3_large_features_are_local_595_plus_global() -> None:
    entry = rf("mobilenet_v3_large").layer("features")
    assert entry is not None and entry.size == (595, 595) and entry.global_  # DESIGN.md's figure


def test_torchvision_resnet50_differs_from_tf_slim_resnet_v1() -> None:
    # torchvision pins the stride on the 3x3 conv (v1.5); TF-slim v1 on the 1x1 gives 483
    assert sizes(rf("resnet50"), "layer4") == 427


def test_resnet152_analytic_pass_is_fast() -> None:
    graph = capture(build("resnet152"), (torch.empty(1, 3, 224, 224, device="meta"),))
    t = time.perf_counter()
    analysis = analyze(graph)
    elapsed = time.perf_counter() - t
    assert sizes(analysis, "layer4") == 1451
    assert elapsed < 1.0, f"the RF pass over resnet152 took {elapsed:.2f} s"


#: (model, last feature layer, axis measured, thin size of the other axis)
SWEEP = [
    ("alexnet", "features", 0, 64),
    ("vgg16", "features", 1, 32),
    ("resnet18", "layer4", 0, 32),
    ("resnet34", "layer4", 1, 32),
    ("resnet50", "layer4", 0, 32),
    ("resnet101", "layer4", 1, 32),
    ("resnet152", "layer4", 0, 32),
    ("inception_v3", "Mixed_7c", 0, 80),
    ("inception_v3", "Mixed_7c", 1, 80),
    ("googlenet", "inception5b", 1, 64),
    ("mobilenet_v2", "features", 0, 32),
    ("mobilenet_v3_large", "features", 1, 32),
    ("densenet121", "features", 0, 32),
    ("efficientnet_b0", "features", 1, 32),
    ("convnext_tiny", "features", 0, 32),
    ("regnet_y_400mf", "trunk_output", 1, 32),
    ("shufflenet_v2_x1_0", "conv5", 0, 32),
    ("squeezenet1_0", "features", 1, 64),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, layer, axis, thin", SWEEP, ids=[f"{s[0]}-{'hw'[s[2]]}" for s in SWEEP])
def test_last_feature_layer_analytic_equals_gradient(name: str, layer: str, axis: int, thin: int) -> None:
    base = rf(name, (1, 3, 299, 299) if name == "inception_v3" else (1, 3, 224, 224))
    assert base.last_feature_layer() is not None
    size, jump = base.layer(layer).size[axis], base.layer(layer).jump[axis]  # type: ignore[union-attr]
    # the measured axis must hold the central unit's whole field (and the next unit's, for the jump);
    # the other axis stays thin to keep the float64 forward/backward cheap
    long = -(-(int(size) + 4 * int(jump)) // 32) * 32
    shape = [1, 3, thin, thin]
    shape[2 + axis] = long
    model = build(name)
    analytic = analyze(capture(model, (torch.empty(shape, device="meta"),))).layer(layer)
    measured = gradient_field(model, shape, layer)
    assert analytic is not None and not measured.clipped[axis]
    assert (measured.size[axis], measured.jump[axis], measured.start[axis]) == (
        analytic.size[axis],
        analytic.jump[axis],
        analytic.start[axis],
    )
    assert measured.global_ == analytic.global_
