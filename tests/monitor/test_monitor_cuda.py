"""CUDA: the monitor's step never synchronises with the host between syncs, and records the
same numbers as on the CPU. Skipped without a CUDA device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from convdoctor.monitor import SYNC_EVERY, Monitor
from convdoctor.monitor import histograms as H


def _run(device: str, steps: int, strict: bool = False) -> Monitor:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10)
    ).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    mon = Monitor(model, num_classes=10)
    gen = torch.Generator().manual_seed(0)
    for i in range(steps):
        x, y = torch.randn(32, 1, 8, 8, generator=gen).to(device), torch.randint(0, 10, (32,), generator=gen).to(device)
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        if strict and 0 < i < SYNC_EVERY - 1:  # not the first step, not the sync step
            torch.cuda.set_sync_debug_mode("error")
        try:
            mon.step(loss=loss, outputs=out, targets=y, optimizer=opt)
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return mon


@pytest.mark.cuda
def test_step_does_not_sync_between_syncs() -> None:
    mon = _run("cuda", SYNC_EVERY, strict=True)
    assert mon.report().steps == SYNC_EVERY


@pytest.mark.cuda
def test_cuda_records_what_the_cpu_records() -> None:
    gpu, cpu = _run("cuda", 60).history(), _run("cpu", 60).history()
    np.testing.assert_allclose(gpu["loss"], cpu["loss"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(np.array(gpu["grad"]), np.array(cpu["grad"]), rtol=1e-2, atol=1e-5)


@pytest.mark.cuda
def test_histogram_steps_do_not_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Histograms every 2nd step (forward hooks and gradients), under sync debug mode "error" from
    step 1 to the step before the sync (the init record is measured again inside the sync)."""
    monkeypatch.setattr(H, "HIST_EVERY", 2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, num_classes=10)
    gen = torch.Generator().manual_seed(0)
    for i in range(SYNC_EVERY):
        x, y = torch.randn(32, 1, 8, 8, generator=gen).cuda(), torch.randint(0, 10, (32,), generator=gen).cuda()
        if 0 < i < SYNC_EVERY - 1:
            torch.cuda.set_sync_debug_mode("error")
        try:
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            mon.step(loss=loss, outputs=out, targets=y, optimizer=opt)
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    steps = [s["step"] for s in mon.history()["histograms"]["steps"]]
    assert steps[:3] == [0, 2, 4]
