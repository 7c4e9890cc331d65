"""DistributedDataParallel: two gloo processes on CPU reach the verdict of one process on the
same global batches, with the same loss curve and class counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from monitor_zoo import ddp_worker, train_global

STEPS = 120


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)
def test_two_ranks_match_one_process(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    single, _ = train_global(STEPS)
    mp.spawn(ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path), STEPS), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]

    codes = [f.code for f in single.findings]
    assert "LR_MISMATCH" in codes  # lr 1e-6: the root, with the loss at chance attached
    for r in ranks:
        assert [f["code"] for f in r["findings"]] == codes
        assert [f["evidence"].get("consequences") for f in r["findings"]] == [
            f.evidence.get("consequences") for f in single.findings
        ]
        assert [f["evidence"]["step"] for f in r["findings"]] == [f.evidence["step"] for f in single.findings]
        np.testing.assert_allclose(r["history"]["loss"], single.history()["loss"], rtol=1e-5)
        np.testing.assert_allclose(np.array(r["history"]["grad"]), np.array(single.history()["grad"]), rtol=1e-4)
        assert r["report"]["epochs"][0]["train_acc"] == pytest.approx(single.report().epochs[0]["train_acc"])
        assert r["history"]["param_names"] == single.history()["param_names"]  # no "module." prefix
