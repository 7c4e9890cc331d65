"""The Lightning callback adapter, run in a real Trainer on digits. Lightning is a declared test
dependency: it is imported plainly, so a missing or broken release fails here instead of skipping."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from monitor_zoo import data, plain_cnn
from torch.nn import functional as F

from convdoctor.monitor.lightning import MonitorCallback


class DigitsModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = plain_cnn(bn=True)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        return {"loss": loss, "logits": logits}

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def fit(batch_size: int, batches: int) -> MonitorCallback:
    x, y, xv, yv = data(0)
    train = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xv, yv), batch_size=300)
    cb = MonitorCallback(num_classes=10)
    trainer = pl.Trainer(
        max_epochs=3,
        limit_train_batches=batches,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[cb],
    )
    trainer.fit(DigitsModule(), train, val)
    return cb


@pytest.mark.slow
def test_callback_names_the_fault_and_stays_quiet_when_healthy() -> None:
    sick = fit(batch_size=4, batches=40)
    assert sick.monitor is not None
    found = {f.code: f for f in sick.monitor.findings}
    assert "BN_SMALL_BATCH" in found and found["BN_SMALL_BATCH"].evidence["batch_size"] == 4
    assert sick.monitor.report().steps == 120 and len(sick.monitor.report().epochs) == 3

    healthy = fit(batch_size=32, batches=40)
    assert healthy.monitor is not None and not healthy.monitor.findings
    report = healthy.monitor.report()
    assert report.groups and report.epochs[-1]["val_acc"] > 0.85
    assert report.epochs[-1]["train_acc"] is not None  # logits and targets reached the monitor
    assert set(healthy.state_dict()) == {"monitor"}
