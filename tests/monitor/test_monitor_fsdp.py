"""FSDP2 (``fully_shard``): two gloo processes on CPU, each holding half of every parameter as a
DTensor shard, reach the verdict of one process on the same global batches, with the same loss
curve, gradient and weight norms (within float tolerance: the norms are summed from shards) and
the same dead units, although the dead filters lie on both ranks' shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from monitor_zoo import DEAD_FILTERS, ddp_worker, train_global

STEPS = 100


def _fsdp_available() -> bool:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        return False
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _fsdp_available(), reason="needs torch.distributed with gloo and FSDP2")
def test_fsdp2_two_ranks_match_one_process(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    single, _ = train_global(STEPS, dead=True)
    mp.spawn(ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path), STEPS, "fsdp", True), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]

    want = [(f.code, f.evidence["step"], f.evidence.get("consequences")) for f in single.findings]
    assert {"DEAD_RELU", "LR_MISMATCH"} <= {c for c, _, _ in want}
    dead = next(f for f in single.findings if f.code == "DEAD_RELU")
    assert (dead.where, dead.evidence["dead"], dead.evidence["units"]) == ("0", len(DEAD_FILTERS), 16)
    layers = single.report().layers
    for r in ranks:
        assert [(f["code"], f["evidence"]["step"], f["evidence"].get("consequences")) for f in r["findings"]] == want
        got = next(f for f in r["findings"] if f["code"] == "DEAD_RELU")
        assert got["evidence"] == {**dead.evidence, "step": got["evidence"]["step"]}
        np.testing.assert_allclose(r["history"]["loss"], single.history()["loss"], rtol=1e-5)
        np.testing.assert_allclose(np.array(r["history"]["grad"]), np.array(single.history()["grad"]), rtol=1e-4)
        for a, b in zip(r["report"]["layers"], layers):
            assert (a["name"], a["units"], a["dead_units"]) == (b["name"], b["units"], b["dead_units"])
            np.testing.assert_allclose(
                [a["grad_norm"], a["weight_norm"]], [b["grad_norm"], b["weight_norm"]], rtol=1e-4
            )
        for a, b in zip(r["report"]["groups"], single.report().groups):
            np.testing.assert_allclose(a["update_ratio"], b["update_ratio"], rtol=1e-3)
        assert r["history"]["param_names"] == single.history()["param_names"]
