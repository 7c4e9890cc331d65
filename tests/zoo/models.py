"""The third-party zoo: timm, segmentation-models-pytorch and torchvision seg/video/flow models.

Random weights only (``pretrained=False``, ``encoder_weights=None``, ``weights=None``):
nothing downloads. Each entry is the smallest variant of its family, at the smallest input
its architecture accepts, so the whole zoo stays cheap. ``family`` is timm's module name
(``timm.models.<family>``), which is how the acceptance counts families.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import segmentation_models_pytorch as smp
import timm
import torch
import torchvision.models.optical_flow as tvflow
import torchvision.models.segmentation as tvseg
import torchvision.models.video as tvvideo
from torch import nn

#: Side of the square input for timm models unless an entry says otherwise: every stride-32
#: backbone still has a 2x2 map at the end.
SIDE = 64


@dataclass(frozen=True)
class Entry:
    """One zoo model: how to build it and what to feed it."""

    name: str
    family: str
    build: Callable[[], nn.Module] = field(repr=False)
    shapes: tuple[tuple[int, ...], ...]

    def inputs(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(s, generator=gen) for s in self.shapes)


def timm_entry(name: str) -> Entry:
    family, kwargs = TIMM_MODELS[name]

    def build() -> nn.Module:
        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()

    return Entry(name, family, build, ((1, 3, SIDE, SIDE),))


#: timm model -> its timm module (the family), and extra constructor arguments.
TIMM_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet10t": ("resnet", {}),
    "resnet18d": ("resnet", {}),
    "legacy_seresnet18": ("senet", {}),
    "resnext26ts": ("byobnet", {}),
    "repvgg_a0": ("byobnet", {}),
    "gernet_s": ("byobnet", {}),
    "efficientnet_lite0": ("efficientnet", {}),
    "tf_efficientnetv2_b0": ("efficientnet", {}),
    "mobilenetv2_050": ("efficientnet", {}),
    "mixnet_s": ("efficientnet", {}),
    "mnasnet_small": ("efficientnet", {}),
    "mobilenetv3_small_050": ("mobilenetv3", {}),
    "mobilenetv4_conv_small": ("mobilenetv3", {}),
    "lcnet_050": ("mobilenetv3", {}),
    "ghostnet_050": ("ghostnet", {}),
    "ghostnetv2_100": ("ghostnet", {}),
    "regnetx_002": ("regnet", {}),
    "regnety_002": ("regnet", {}),
    "resnest14d": ("resnest", {}),
    "cspresnet50": ("cspnet", {}),
    "darknet17": ("cspnet", {}),
    "dla46_c": ("dla", {}),
    "dpn48b": ("dpn", {}),
    "densenet121": ("densenet", {}),
    "nf_resnet26": ("nfnet", {}),
    "nf_regnet_b0": ("nfnet", {}),
    "rexnet_100": ("rexnet", {}),
    "hrnet_w18_small": ("hrnet", {}),
    "tresnet_m": ("tresnet", {}),
    "convnext_atto": ("convnext", {}),
    "convnextv2_atto": ("convnext", {}),
    "mobilevit_xxs": ("mobilevit", {}),
    "mobilevitv2_050": ("mobilevit", {}),
    "edgenext_xx_small": ("edgenext", {}),
    "poolformer_s12": ("metaformer", {}),
    "fastvit_t8": ("fastvit", {}),
    "repghostnet_050": ("repghost", {}),
    "selecsls42b": ("selecsls", {}),
    "ese_vovnet19b_dw": ("vovnet", {}),
    "hgnetv2_b0": ("hgnet", {}),
    "xception41": ("xception_aligned", {}),
    "res2net50_26w_4s": ("res2net", {}),
    "skresnet18": ("sknet", {}),
    "efficientvit_b0": ("efficientvit_mit", {}),
    "inception_next_atto": ("inception_next", {}),
    "starnet_s050": ("starnet", {}),
    "tiny_vit_5m_224": ("tiny_vit", {}),
    "resnetv2_50": ("resnetv2", {}),
    "fbnetc_100": ("efficientnet", {}),
    "dla34": ("dla", {}),
    "mobileone_s0": ("byobnet", {}),
    "tinynet_e": ("efficientnet", {}),
    "hardcorenas_a": ("mobilenetv3", {}),
}


def _smp(arch: str, encoder: str) -> Entry:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return getattr(smp, arch)(encoder, encoder_weights=None, classes=2).eval()

    return Entry(f"smp.{arch}({encoder})", "smp", build, ((1, 3, SIDE, SIDE),))


#: segmentation-models-pytorch: 8 decoders over 4 encoders (random init, no download).
SMP_MODELS = [
    _smp(a, e)
    for a, e in [
        ("Unet", "resnet18"),
        ("FPN", "mobilenet_v2"),
        ("DeepLabV3Plus", "efficientnet-b0"),
        ("PSPNet", "resnet18"),
        ("Linknet", "resnet18"),
        ("MAnet", "resnet18"),
        ("UnetPlusPlus", "resnet18"),
        ("Segformer", "mobilenet_v2"),
        ("UPerNet", "resnet18"),
    ]
]


def _tv(module: Any, name: str, shapes: tuple[tuple[int, ...], ...], **kwargs: Any) -> Entry:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return module.__dict__[name](weights=None, **kwargs).eval()

    return Entry(f"torchvision.{name}", module.__name__.rsplit(".", 1)[-1], build, shapes)


def _small_mvit(name: str) -> Entry:
    """MViT fixes its input size (16x224x224) inside the builder: the same blocks for a 4x32x32 clip."""
    mvit = sys.modules[tvvideo.mvit_v2_s.__module__]

    def build() -> nn.Module:
        torch.manual_seed(0)
        original = mvit._mvit

        def small(**kw: Any) -> nn.Module:
            return original(**{**kw, "spatial_size": (32, 32), "temporal_size": 4})

        with mock.patch.object(mvit, "_mvit", small):
            return getattr(tvvideo, name)(weights=None).eval()

    return Entry(f"torchvision.{name}", "video", build, _CLIP)


_IMG = ((1, 3, SIDE, SIDE),)
_CLIP = ((1, 3, 4, 32, 32),)
_NO_BACKBONE = {"weights_backbone": None, "num_classes": 3}
#: Every torchvision segmentation, video and optical-flow builder (tests assert the lists are complete).
TV_MODELS = [
    *[
        _tv(tvseg, n, _IMG, **_NO_BACKBONE)
        for n in (
            "deeplabv3_mobilenet_v3_large",
            "deeplabv3_resnet50",
            "deeplabv3_resnet101",
            "fcn_resnet50",
            "fcn_resnet101",
            "lraspp_mobilenet_v3_large",
        )
    ],
    *[_tv(tvvideo, n, _CLIP) for n in ("r3d_18", "mc3_18", "r2plus1d_18", "swin3d_t", "swin3d_s", "swin3d_b")],
    _tv(tvvideo, "s3d", ((1, 3, 16, 224, 224),)),  # its (2, 7, 7) average pool needs the full clip
    *[_small_mvit(n) for n in ("mvit_v1_b", "mvit_v2_s")],
    *[_tv(tvflow, n, ((1, 3, 128, 128),) * 2) for n in ("raft_small", "raft_large")],  # 16x16 features
]
