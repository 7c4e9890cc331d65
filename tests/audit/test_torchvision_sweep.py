"""No false alarms: every torchvision classifier at random init, in eval mode, passes the runtime checks.

Kept cheap (about 16 single-sample forwards per model): each model runs at the smallest
input its architecture accepts (ViTs are built for a small ``image_size``), on 2 samples with
batch sizes 1 and 2 (plus the batch check's mixed batch of 3), and only the checks the
acceptance names (modes, batch, determinism, bn_stats). Batch 1 against batch 2 is where
CPU kernels change algorithm, so it is the case a tolerance must survive. Export parity is
tested on three models in ``test_export.py``.
"""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm

from convdoctor.audit import audit
from convdoctor.findings import Severity
from convdoctor.results.audit import CheckStatus

#: Smallest square input each architecture accepts when 32 is too small.
SIZE = {"alexnet": 64, "inception_v3": 96, "maxvit_t": 224}
#: ViTs fix their input size at construction: build them small (patch size x 2).
VIT_SIZE = {"vit_b_16": 32, "vit_b_32": 64, "vit_l_16": 32, "vit_l_32": 64, "vit_h_14": 28}
CHECKS = ("modes", "batch", "determinism", "bn_stats")
MODELS = tvm.list_models(module=tvm)


def test_sweep_covers_every_classifier() -> None:
    assert len(MODELS) == 80


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_no_error_finding_in_eval_mode(name: str) -> None:
    torch.manual_seed(0)
    kwargs = {"image_size": VIT_SIZE[name]} if name in VIT_SIZE else {}
    side = VIT_SIZE.get(name) or SIZE.get(name, 32)
    model = tvm.get_model(name, weights=None, **kwargs).eval()
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    report = audit(model, x, batch_sizes=(1, 2), checks=CHECKS)
    errors = [f"{f.code}: {f.message}" for f in report.findings if f.severity is Severity.ERROR]
    assert not errors, errors
    status = {c.name: c.status for c in report.checks}
    assert status["batch"] is CheckStatus.PASS and status["determinism"] is CheckStatus.PASS, report.checks
    assert status["modes"] is CheckStatus.PASS
