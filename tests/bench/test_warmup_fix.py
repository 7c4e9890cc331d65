"""The ``convdoctor.fix.warmup`` remedy (answers COLD_START_SLOW)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convdoctor._guard import state_dict_digest, training_flags
from convdoctor.errors import UsageError
from convdoctor.fix import warmup
from convdoctor.fix.warmup import _settled_after


def test_runs_n_calls_and_leaves_model_unchanged(tiny: nn.Module) -> None:
    seen: list[bool] = []
    tiny.train()
    digest, flags = state_dict_digest(tiny), training_flags(tiny)
    handle = tiny.register_forward_pre_hook(lambda m, a: seen.append(m.training))
    result = warmup(tiny, torch.randn(2, 3, 16, 16), n=4)
    handle.remove()
    assert len(result.times_ms) == 4 and seen == [False] * 4  # in eval: no BatchNorm update
    assert result.first_ms == result.times_ms[0] and result.last_ms == result.times_ms[-1]
    assert state_dict_digest(tiny) == digest and training_flags(tiny) == flags


def test_tuple_input() -> None:
    class Add(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    assert len(warmup(Add(), (torch.ones(2), torch.ones(2)), n=2).times_ms) == 2


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_bad_n(n: object) -> None:
    with pytest.raises(UsageError, match="n >= 1"):
        warmup(nn.Identity(), torch.ones(1), n=n)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("times", "settled"),
    [([100.0, 50.0, 10.0, 10.5, 9.8, 10.0], 2), ([10.0, 10.0], 0), ([30.0, 20.0, 10.0], 2), ([5.0], 0)],
)
def test_settled_after(times: list[float], settled: int) -> None:
    assert _settled_after(times) == settled


def test_docstring_names_the_code() -> None:
    assert "COLD_START_SLOW" in (warmup.__doc__ or "")
