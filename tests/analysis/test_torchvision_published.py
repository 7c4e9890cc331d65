"""Params and MACs of every torchvision classification model against its published metadata.

The reference is torchvision's own ``weights.meta``: ``num_params`` (exact) and ``_ops``
(GMACs at the weights' eval crop, published to 3 decimals). Nothing is downloaded: the
metadata ships with torchvision and the models are built on the meta device.
"""

from __future__ import annotations

import pytest
import torchvision.models as tvm

from convdoctor.capture.load import load_model
from convdoctor.inspect import inspect


def _cases() -> list[tuple[str, str]]:
    return [(name, w.name) for name in tvm.list_models(module=tvm) for w in tvm.get_model_weights(name)]


def _spec(name: str, crop: int) -> str:
    kwargs = []
    if name.startswith("vit_"):
        kwargs.append(f"image_size={crop}")  # ViTs are built for the weights' resolution
    if name == "googlenet":
        kwargs.append("aux_logits=False")  # the published model drops its auxiliary heads
    return f"torchvision:{name}" + ("?" + ",".join(kwargs) if kwargs else "")


@pytest.mark.slow
@pytest.mark.parametrize("name, weights", _cases())
def test_params_and_macs_match_published(name: str, weights: str) -> None:
    w = tvm.get_model_weights(name)[weights]
    crop = int(w.transforms.keywords["crop_size"])
    report = inspect(load_model(_spec(name, crop), meta=True), (1, 3, crop, crop))
    assert report.totals["params"] == w.meta["num_params"]
    assert round(report.totals["macs"] / 1e9, 3) == pytest.approx(w.meta["_ops"], abs=1e-9)
    assert report.uncounted_ops == {}


def test_all_eighty_models_are_covered() -> None:
    assert len(tvm.list_models(module=tvm)) >= 80
    assert len(_cases()) > 80  # several models publish more than one set of weights
