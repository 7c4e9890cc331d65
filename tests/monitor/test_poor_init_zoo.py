"""No POOR_INIT on the inits timm and torchvision ship: random weights, three SGD steps on random
64x64 images (enough for the identical-filter argument's later measurement), then the first sync.

BatchNorm models are scale-invariant, so only their identical-filter argument can speak; the
models without normalisation (AlexNet, VGG-11, SqueezeNet: PyTorch's and torchvision's own inits)
exercise the scale argument, and ``resnetv2_50(zero_init_last=True)`` zero-initialises the last
conv of every residual branch, which must not count as "identical filters".
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from convdoctor.monitor import Monitor

TORCHVISION = ["resnet18", "alexnet", "vgg11", "squeezenet1_1", "mobilenet_v3_small", "densenet121", "regnet_y_400mf"]
TIMM = [
    ("resnet18", {}),
    ("resnetv2_50", {"zero_init_last": True}),
    ("efficientnet_b0", {}),
    ("convnext_atto", {}),
    ("repvgg_a0", {}),
    ("nf_resnet26", {}),
    ("mobilenetv3_small_100", {}),
]


def _build(source: str, name: str, kwargs: dict[str, object]) -> torch.nn.Module:
    torch.manual_seed(0)
    if source == "timm":
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    import torchvision.models as tvm

    return tvm.get_model(name, weights=None, num_classes=10)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "name", "kwargs"),
    [("torchvision", n, {}) for n in TORCHVISION] + [("timm", n, kw) for n, kw in TIMM],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_library_inits_are_not_poor_init(source: str, name: str, kwargs: dict[str, object]) -> None:
    model = _build(source, name, kwargs).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = Monitor(model, num_classes=10)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.randn(4, 3, 64, 64, generator=gen), torch.randint(0, 10, (4,), generator=gen)
        out = model(x)
        if not isinstance(out, torch.Tensor):  # GoogLeNet-style named tuples
            out = out[0]
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        mon.step(loss=loss, outputs=out, targets=y, optimizer=opt)
        opt.step()
    mon.flush()
    record = mon._init.record
    assert record is not None and len(record.layers) > 3 and record.later_step == 2  # judged, not skipped
    found = [f"{f.code}: {f.message}" for f in mon.findings if f.code == "POOR_INIT"]
    assert not found, found
    mon.close()
