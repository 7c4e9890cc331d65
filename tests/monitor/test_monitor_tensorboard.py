"""``Monitor(writer=SummaryWriter(...))`` and the Lightning callback's logger, read back with
TensorBoard's own reader (``EventAccumulator``): the scalars equal what the test computed itself
(the loss it called backward on, the gradient norm over ``p.grad``), the histograms count every
element of the gradient the test captured, and each finding is there as text."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monitor_zoo import data, plain_cnn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.nn import functional as F
from torch.utils.tensorboard import SummaryWriter

from convdoctor.errors import UsageError
from convdoctor.monitor import Monitor
from convdoctor.monitor.histograms import BINS, bucket_limits


def events(logdir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def run(logdir: Path, steps: int = 60, zero: bool = False) -> tuple[Monitor, dict[str, list]]:
    torch.manual_seed(0)
    model = plain_cnn()
    if zero:
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
    x, y, xv, yv = data(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    writer = SummaryWriter(str(logdir))
    mon = Monitor(model, num_classes=10, writer=writer)
    seen: dict[str, list] = {"loss": [], "grad_norm": [], "grads": []}
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        idx = torch.randint(0, len(y), (32,), generator=gen)
        out = model(x[idx])
        loss = F.cross_entropy(out, y[idx])
        opt.zero_grad()
        loss.backward()
        seen["loss"].append(float(loss.detach()))
        seen["grad_norm"].append(
            float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()])))
        )
        seen["grads"].append({"0": model[0].weight.grad.clone(), "8": model[8].weight.grad.clone()})
        mon.step(loss=loss, outputs=out, targets=y[idx], optimizer=opt)
        opt.step()
        if step == 29:
            with torch.no_grad():
                val = model(xv)
            mon.end_epoch(val_loss=float(F.cross_entropy(val, yv)), val_acc=float((val.argmax(1) == yv).float().mean()))
            seen["val_loss"] = [float(F.cross_entropy(val, yv))]
    mon.close()  # writes the steps since the last sync
    writer.close()
    return mon, seen


def test_scalars_equal_the_monitor_and_a_direct_computation(tmp_path: Path) -> None:
    mon, seen = run(tmp_path)
    acc = events(tmp_path)
    loss = acc.Scalars("convdoctor/loss")
    assert [e.step for e in loss] == list(range(60))  # every step exactly once, the tail included
    got = np.array([e.value for e in loss])
    np.testing.assert_allclose(got, seen["loss"], rtol=1e-6)  # what backward() was called on
    np.testing.assert_allclose(got, mon.history()["loss"], rtol=1e-6)  # what the monitor recorded
    grad = acc.Scalars("convdoctor/grad_norm")
    np.testing.assert_allclose([e.value for e in grad], seen["grad_norm"], rtol=1e-5)
    ratio = acc.Scalars("convdoctor/update_ratio/group0")
    assert [e.step for e in ratio] == [0, 10, 20, 30, 40, 50]
    assert [e.value for e in acc.Scalars("convdoctor/lr/group0")] == pytest.approx([0.05] * 6)
    (val,) = acc.Scalars("convdoctor/epoch/val_loss")
    assert val.step == 30 and val.value == pytest.approx(seen["val_loss"][0], rel=1e-6)


def test_gradient_histograms_count_every_element(tmp_path: Path) -> None:
    _, seen = run(tmp_path)
    acc = events(tmp_path)
    assert {"convdoctor/gradients/0", "convdoctor/gradients/8", "convdoctor/activations/0"} <= set(
        acc.Tags()["histograms"]
    )
    for layer in ("0", "8"):
        hist = acc.Histograms(f"convdoctor/gradients/{layer}")
        assert [h.step for h in hist] == [0, 50]
        for h in hist:
            g = seen["grads"][h.step][layer].double()
            v = h.histogram_value
            assert sum(v.bucket) == v.num == g.numel()  # counts equal the number of elements
            assert list(v.bucket_limit) == bucket_limits() and len(v.bucket) == BINS
            assert v.min == pytest.approx(float(g.min())) and v.max == pytest.approx(float(g.max()))
            assert v.sum == pytest.approx(float(g.sum()), rel=1e-5, abs=1e-9)
            assert v.sum_squares == pytest.approx(float((g * g).sum()), rel=1e-5)
            pos = float((g > 0).sum())  # the positive half (tiny values go to the innermost bin), from g itself
            assert sum(v.bucket[BINS // 2 + 1 :]) == pos


def test_findings_are_written_as_text(tmp_path: Path) -> None:
    mon, _ = run(tmp_path, steps=30, zero=True)
    (finding,) = mon.findings
    assert finding.code == "POOR_INIT"
    acc = events(tmp_path)
    (text,) = acc.Tensors("convdoctor/findings/POOR_INIT/text_summary")
    body = text.tensor_proto.string_val[0].decode()
    assert text.step == finding.evidence["step"] == 25
    assert "**POOR_INIT**" in body and finding.message in body and finding.fix in body


def test_a_writer_must_be_one() -> None:
    with pytest.raises(UsageError, match="SummaryWriter"):
        Monitor(nn.Linear(2, 2), writer=object())


def test_lightning_callback_logs_to_the_trainers_logger(tmp_path: Path) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger
    from test_monitor_lightning import DigitsModule

    from convdoctor.monitor.lightning import MonitorCallback

    x, y, _, _ = data(0)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    logger = TensorBoardLogger(str(tmp_path), name="run", version=0)
    cb = MonitorCallback(num_classes=10)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=30,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[cb],
    )
    trainer.fit(DigitsModule(), loader)
    logger.experiment.flush()
    assert cb.monitor is not None
    acc = events(Path(logger.log_dir))
    loss = acc.Scalars("convdoctor/loss")
    assert [e.step for e in loss] == list(range(30))
    np.testing.assert_allclose([e.value for e in loss], cb.monitor.history()["loss"], rtol=1e-6)
    hist = acc.Histograms("convdoctor/gradients/net.0")
    weight = cb.monitor._collector.model.net[0].weight
    assert [h.step for h in hist] == [0] and all(h.histogram_value.num == weight.numel() for h in hist)
    assert not math.isnan(acc.Scalars("convdoctor/grad_norm")[0].value)
