"""Per-layer histograms: the counts checked against numpy's own histogram of the same values
(captured by the test: gradients cloned before ``mon.step``, layer outputs through the test's
own forward hooks), the steps they are taken at, and the plots drawn from them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from convdoctor.monitor import Monitor
from convdoctor.monitor import histograms as H


def edges() -> np.ndarray:
    """Bin edges in value space, from the documented bins alone: +-2^e for e in [LO, HI + 1], and 0."""
    mags = [2.0**e for e in range(H.HIST_LO, H.HIST_HI + 2)]
    return np.array([-m for m in reversed(mags)] + [0.0] + mags)


def numpy_counts(values: np.ndarray) -> np.ndarray:
    """The expected counts with np.histogram over value-space edges (outliers clipped into the ends)."""
    v = values[~np.isnan(values)].astype(np.float64)
    lo, hi = 2.0**H.HIST_LO, 2.0**H.HIST_HI
    v = np.where(v > 0, np.clip(v, lo, hi), np.where(v < 0, np.clip(v, -hi, -lo), 0.0))
    e = edges()
    pos = np.histogram(v[v > 0], bins=e[e > 0])[0]
    neg = np.histogram(-v[v < 0], bins=e[e > 0])[0][::-1]  # mirror: (-2^(k+1), -2^k] like [2^k, 2^(k+1))
    return np.concatenate([neg, [np.sum(v == 0)], pos])


def test_histogram_matches_numpy_on_values_across_fifty_decades() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5000, generator=gen) * 10.0 ** torch.randint(-14, 7, (5000,), generator=gen).float()
    x[:7] = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 1e-30, -1e30, float("nan")])
    row = H.histogram(x).numpy()
    counts = row[: H.BINS]
    np.testing.assert_array_equal(counts, numpy_counts(x.numpy()))
    assert counts.sum() == x.numel() - 1  # NaN is not counted, everything else is
    finite = x[torch.isfinite(x)].double()
    y = torch.randn(3, 4, 5, generator=gen)  # min, max, sum, sum of squares on a finite tensor
    stats = H.histogram(y).numpy()[H.BINS :]
    assert stats.tolist() == pytest.approx(
        [float(y.min()), float(y.max()), float(y.double().sum()), float((y.double() ** 2).sum())]
    )
    assert finite.numel() == x.numel() - 3


def test_the_deterministic_path_counts_the_same() -> None:
    """``histc`` is refused on CUDA under ``use_deterministic_algorithms``: the sort-based counts
    that replace it there give numpy's counts too (run here on the CPU)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3000, generator=gen) * 10.0 ** torch.randint(-14, 7, (3000,), generator=gen).float()
    x[:6] = torch.tensor([0.0, float("inf"), -float("inf"), float("nan"), 1e-30, -1e30])
    counts = H._sorted_counts(H.signed_bin(x.clone())).numpy()
    np.testing.assert_array_equal(counts, numpy_counts(x.numpy()))


def test_counts_stay_exact_beyond_float32_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts are summed per chunk in float64: the same numbers with tiny chunks as with one."""
    x = torch.randn(10_001, generator=torch.Generator().manual_seed(1))
    whole = H.histogram(x)
    monkeypatch.setattr(H, "CHUNK", 97)
    assert torch.equal(H.histogram(x), whole) and float(whole[: H.BINS].sum()) == 10_001


def test_bucket_limits_are_the_right_edges() -> None:
    limits = H.bucket_limits()
    assert len(limits) == H.BINS and limits == sorted(limits) and limits[H.MAGNITUDES] == 0.0
    assert limits[H.MAGNITUDES + 1] == 2.0 ** (H.HIST_LO + 1) and limits[-1] == 2.0 ** (H.HIST_HI + 1)
    assert limits[0] == -(2.0**H.HIST_HI) and limits[H.MAGNITUDES - 1] == -(2.0**H.HIST_LO)


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)
    )


def train(
    model: nn.Module, mon: Monitor, steps: int, validate: Callable[[int], bool] = lambda s: False
) -> dict[int, dict[str, dict[str, np.ndarray]]]:
    """Train on random batches; return, per step, the gradients and layer outputs the test saw."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    units = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    seen: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    outs: dict[str, np.ndarray] = {}
    hooks = [
        m.register_forward_hook(lambda mod, a, o, n=n: outs.__setitem__(n, o.detach().numpy().copy()))
        for n, m in units.items()
    ]
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        x, y = torch.randn(8, 1, 6, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        outs.clear()
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        seen[step] = {"act": dict(outs), "grad": {n: m.weight.grad.numpy().copy() for n, m in units.items()}}
        mon.step(loss=loss, outputs=out, targets=y, optimizer=opt)
        opt.step()
        if validate(step):  # an eval pass between steps (no autograd) must not count
            model.eval()
            with torch.no_grad():
                model(torch.randn(16, 1, 6, 6))
            model.train()
    for h in hooks:
        h.remove()
    mon.flush()  # read back what is pending (history() itself does not flush)
    return seen


def test_monitor_keeps_per_layer_histograms_of_what_the_step_saw() -> None:
    model = net()
    mon = Monitor(model, num_classes=3)
    seen = train(model, mon, 110, validate=lambda s: s in (49, 99))
    hist = mon.history()["histograms"]
    assert H.HIST_EVERY == 50 and [s["step"] for s in hist["steps"]] == [0, 50, 100]  # every HIST_EVERY-th sample
    assert hist["limits"] == H.bucket_limits()
    for s in hist["steps"]:
        assert s["layers"] == ["0", "4"]  # depth order
        for kind in ("grad", "act"):
            for i, name in enumerate(s["layers"]):
                values = seen[s["step"]][kind][name]
                row = np.asarray(s[kind][i])
                np.testing.assert_array_equal(row[: H.BINS], numpy_counts(values.ravel()))
                assert row[: H.BINS].sum() == values.size  # counts = elements (validation left out)
                assert row[H.BINS] == pytest.approx(values.min()) and row[H.BINS + 1] == pytest.approx(values.max())
                assert row[H.BINS + 3] == pytest.approx(float((values.astype(np.float64) ** 2).sum()), rel=1e-6)


def test_every_n_and_off() -> None:
    model = net()
    mon = Monitor(model, num_classes=3, every=2)
    train(model, mon, 110)
    assert [s["step"] for s in mon.history()["histograms"]["steps"]] == [0, 100]  # the 0th and 50th samples
    quiet = Monitor(net(), num_classes=3, histograms=False)
    train(quiet.__dict__["_collector"].model, quiet, 30)
    assert mon.history()["histograms"]["steps"] and not quiet.history()["histograms"]["steps"]


def test_histograms_survive_a_checkpoint_and_the_json() -> None:
    import json

    model = net()
    mon = Monitor(model, num_classes=3)
    train(model, mon, 30)
    again = Monitor(model, num_classes=3)
    again.load_state_dict(mon.state_dict())
    assert again.history()["histograms"] == mon.history()["histograms"]
    doc = json.loads(mon.to_json())
    assert doc["history"]["histograms"]["steps"][0]["grad"] == mon.history()["histograms"]["steps"][0]["grad"]


def test_plots_and_html_draw_the_histograms(tmp_path: object) -> None:
    from convdoctor.report import render
    from convdoctor.report.monitor_plot import save_monitor_plots

    model = net()
    mon = Monitor(model, num_classes=3)
    train(model, mon, 30)
    paths = save_monitor_plots(mon.report(figures=True), tmp_path)  # type: ignore[arg-type]
    names = sorted(p.name for p in paths)
    assert names == ["activation_histograms.png", "grad_histograms.png", "grad_norms.png", "loss.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in paths)
    assert render(mon.report(figures=True), "html").count("data:image/png;base64,") == 4
