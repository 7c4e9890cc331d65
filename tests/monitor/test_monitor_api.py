"""The Monitor's protocol: recorded numbers checked against autograd and hand counts,
misuse errors, the model left unchanged, state round trip, reports and plots."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from convdoctor._guard import state_dict_digest, training_flags
from convdoctor.errors import UsageError
from convdoctor.findings import make_finding
from convdoctor.monitor import SYNC_EVERY, Monitor
from convdoctor.monitor.stats import UPDATE_EVERY
from convdoctor.results.monitor import MonitorReport


def tiny(bn: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4) if bn else nn.Identity(),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 36, 3),
    )


def batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(x)
    loss = F.cross_entropy(out, y)
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss, out


# ---------------------------------------------------------------------------- numbers
def test_recorded_norms_match_autograd() -> None:
    model = tiny()
    mon = Monitor(model)
    x, y = batch()
    loss, out = backward(model, x, y)
    expected = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    mon.step(loss=loss, outputs=out, targets=y)
    mon.flush()
    h = mon.history()
    by_name = dict(zip(h["param_names"], h["grad"][0]))
    for (name, _), g in zip(model.named_parameters(), expected):
        assert by_name[name] == pytest.approx(float(g.norm()), rel=1e-5)
    assert h["loss"][0] == pytest.approx(float(loss.detach()))
    assert mon.report().num_classes == 3


def test_class_counts_and_accuracy_match_a_hand_count() -> None:
    model = tiny()
    mon = Monitor(model, num_classes=3)
    x, y = batch(16)
    loss, out = backward(model, x, y)
    mon.step(loss=loss, outputs=out, targets=y)
    mon.end_epoch()
    w = mon._window
    assert w is not None
    np.testing.assert_array_equal(w.preds[0], torch.bincount(out.argmax(1), minlength=3).numpy())
    np.testing.assert_array_equal(w.targets[0], torch.bincount(y, minlength=3).numpy())
    acc = float((out.argmax(1) == y).float().mean())
    assert mon.report().epochs[0]["train_acc"] == pytest.approx(acc)


def test_update_ratio_matches_the_weights_before_and_after() -> None:
    model = tiny()
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "name": "conv"},
            {"params": list(model[1].parameters()) + list(model[4].parameters()), "lr": 0.5},
        ],
        lr=0.1,
        momentum=0.9,
    )
    mon = Monitor(model)
    x, y = batch()
    loss, out = backward(model, x, y)
    before = [[p.detach().clone() for p in g["params"]] for g in opt.param_groups]
    mon.step(loss=loss, outputs=out, targets=y, optimizer=opt)
    opt.step()
    mon.flush()
    expected = []
    for old, g in zip(before, opt.param_groups):
        d = math.sqrt(sum(float((o - p.detach()).pow(2).sum()) for o, p in zip(old, g["params"])))
        n = math.sqrt(sum(float(p.detach().pow(2).sum()) for p in g["params"]))
        expected.append(d / n)
    groups = mon.report().groups
    assert [g["name"] for g in groups] == ["conv", "group1"]
    assert [g["update_ratio"] for g in groups] == pytest.approx(expected, rel=1e-5)
    assert [g["lr"] for g in groups] == [0.1, 0.5]


def test_every_samples_costly_statistics_every_n_steps() -> None:
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = Monitor(model, every=4)
    for i in range(2 * SYNC_EVERY):
        x, y = batch(seed=i)
        loss, out = backward(model, x, y)
        mon.step(loss=loss, outputs=out, targets=y, optimizer=opt)
        opt.step()
    w = mon._window
    assert w is not None and w.step == 2 * SYNC_EVERY and len(w.loss) == 2 * SYNC_EVERY
    np.testing.assert_array_equal(w.grad_steps, np.arange(0, 2 * SYNC_EVERY, 4))
    np.testing.assert_array_equal(w.update_steps, np.arange(0, 2 * SYNC_EVERY, 4 * UPDATE_EVERY))


def test_dead_units_behind_functional_and_module_relu() -> None:
    """Channels 0 and 2 of the first conv get a bias of -100: their ReLU never opens."""

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 36, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(F.relu(self.conv(x)).flatten(1))

    for model, layer in ((Functional(), "conv"), (tiny(bn=False), "0")):
        with torch.no_grad():
            conv = model.get_submodule(layer)
            conv.bias[[0, 2]] = -100.0
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        mon = Monitor(model)
        for i in range(120):
            x, y = batch(seed=i)
            loss, out = backward(model, x.abs(), y)
            mon.step(loss=loss, outputs=out, targets=y, optimizer=opt)
            opt.step()
        dead = [f for f in mon.findings if f.code == "DEAD_RELU"]
        assert len(dead) == 1 and dead[0].where == layer
        assert dead[0].evidence["dead"] == 2 and dead[0].evidence["units"] == 4


class Acts(nn.Module):
    """Five conv/linear layers, each followed by another nonlinearity, two of them functional."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)
        self.act2, self.act3 = nn.LeakyReLU(0.1), nn.ReLU6()
        self.fc1, self.fc2 = nn.Linear(4 * 36, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x))
        x = self.act3(self.c3(self.act2(self.c2(x)))) + 0.0  # an add between layers changes nothing
        return self.fc2(F.gelu(self.fc1(x.flatten(1))))


def test_the_activation_after_each_layer_is_recorded() -> None:
    """Module and functional activations alike; only ReLU-like ones can have dead units."""
    model = Acts()
    mon = Monitor(model)
    x, y = batch()
    loss, out = backward(model, x, y)
    mon.step(loss=loss, outputs=out, targets=y)
    mon.flush()
    acts = {row["name"]: row["activation"] for row in mon.report().layers}
    assert acts == {"c1": "relu", "c2": "leaky_relu", "c3": "hardtanh", "fc1": "gelu", "fc2": None}
    window = mon._window
    assert window is not None
    assert {u.name: u.can_die for u in window.units} == {
        "c1": True,
        "c2": False,
        "c3": True,
        "fc1": False,
        "fc2": False,
    }
    x2, _ = batch(seed=1)
    model(x2)  # the probe left after the first forward: no mode, no hooks of its own
    assert not torch.overrides._get_current_function_mode_stack()


def test_nan_gradients_are_not_dead_units() -> None:
    """Weights gone NaN give NaN gradients for 100+ steps: broken (NAN_LOSS), never "dead"."""
    model = tiny(bn=False)
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    mon = Monitor(model)
    for i in range(110):
        x, y = batch(seed=i)
        loss, out = backward(model, x, y)
        mon.step(loss=loss, outputs=out, targets=y)
    assert [f.code for f in mon.findings] == ["NAN_LOSS"]
    assert all(row["dead_units"] == 0 for row in mon.report().layers)


def _label_run(targets_of: object, steps: int = SYNC_EVERY, **kw: object) -> Monitor:
    model = tiny(bn=False)
    mon = Monitor(model, num_classes=3, **kw)  # type: ignore[arg-type]
    for i in range(steps):
        x, y = batch(seed=i)
        loss, out = backward(model, x, y)
        mon.step(loss=loss, outputs=out, targets=targets_of(y, i))  # type: ignore[operator]
    return mon


def test_out_of_range_targets_are_counted_and_ignore_index_is_not() -> None:
    def targets(y: torch.Tensor, i: int) -> torch.Tensor:  # per batch of 8: one 3, one -1, one -100
        return torch.cat([y[:5], torch.tensor([3, -1, -100])])

    found = {f.code: f for f in _label_run(targets).findings}
    assert list(found) == ["DEGENERATE_TARGETS"]
    ev = found["DEGENERATE_TARGETS"].evidence
    assert (ev["below_zero"], ev["at_or_above_num_classes"], ev["soft_rows_not_summing_to_1"]) == (25, 25, 0)
    assert ev["targets"] == 25 * 7 and ev["first_step"] == 0  # -100 is the loss's ignore_index: not a label
    strict = _label_run(targets, ignore_index=None).findings[0].evidence
    assert strict["below_zero"] == 50


def test_one_logit_binary_targets_are_not_class_indices() -> None:
    """BCEWithLogits on (N, 1) outputs with 0/1 targets: target 1 is not "at or above 1 class"."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 1))
    mon = Monitor(model)
    for i in range(SYNC_EVERY):
        x, y = batch(seed=i)
        target = (y > 0).float()
        out = model(x)
        loss = F.binary_cross_entropy_with_logits(out[:, 0], target)
        model.zero_grad()
        loss.backward()
        mon.step(loss=loss, outputs=out, targets=target)
    assert "DEGENERATE_TARGETS" not in [f.code for f in mon.findings]


def test_soft_targets_label_smoothing_and_multi_hot_are_fine() -> None:
    smooth = _label_run(lambda y, i: F.one_hot(y, 3).float() * 0.9 + 0.1 / 3)
    multi_hot = _label_run(lambda y, i: (F.one_hot(y, 3) + F.one_hot((y + 1) % 3, 3)).float())
    assert smooth.findings == [] and multi_hot.findings == []
    wrong_dim = _label_run(lambda y, i: torch.softmax(F.one_hot(y, 3).float(), dim=0))  # over the batch
    assert wrong_dim.findings[0].evidence["soft_rows_not_summing_to_1"] == 8 * SYNC_EVERY


# ---------------------------------------------------------------------------- the model is left alone
def test_monitor_never_changes_the_model_or_its_training() -> None:
    """Two identical runs, one watched: bit-identical weights, buffers and flags at the end."""
    runs = []
    for watched in (False, True):
        model = tiny()
        model[1].eval()  # a module in a different mode than its parent must stay so
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        hooks_before = len(model[1]._forward_hooks)
        mon = Monitor(model) if watched else None
        for i in range(60):
            x, y = batch(seed=i)
            loss, out = backward(model, x, y)
            if mon is not None:
                digest, flags = state_dict_digest(model), training_flags(model)
                grads = [p.grad.clone() for p in model.parameters()]
                mon.step(loss=loss, outputs=out, targets=y, optimizer=opt)
                assert state_dict_digest(model) == digest and training_flags(model) == flags
                assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
            opt.step()
        if mon is not None:
            mon.report()
            mon.close()
            assert len(model[1]._forward_hooks) == hooks_before and not opt._optimizer_step_post_hooks
        runs.append((state_dict_digest(model), training_flags(model)))
    assert runs[0] == runs[1]


# ---------------------------------------------------------------------------- misuse
def test_step_before_backward_is_an_error() -> None:
    model = tiny()
    mon = Monitor(model)
    x, y = batch()
    out = model(x)
    with pytest.raises(UsageError, match=r"after loss\.backward\(\)"):
        mon.step(loss=F.cross_entropy(out, y), outputs=out, targets=y)


@pytest.mark.parametrize(
    ("loss", "outputs", "targets", "match"),
    [
        (torch.ones(8), None, None, r"loss must be a scalar, got shape \(8,\)"),
        ("1.0", None, None, r"loss must be a scalar tensor or a number, got str"),
        (torch.tensor(1.0), torch.zeros(8, 3), torch.zeros(6, dtype=torch.long), r"batch size 8 but targets.*\(6,\)"),
        (
            torch.tensor(1.0),
            torch.zeros(8, 5),
            torch.zeros(8, dtype=torch.long),
            r"5 classes in dim 1 but.*num_classes=3",
        ),
        (torch.tensor(1.0), {"scores": torch.zeros(8, 3)}, None, r"outputs must be the logits tensor"),
    ],
)
def test_bad_arguments_are_one_line_errors(loss: object, outputs: object, targets: object, match: str) -> None:
    model = tiny()
    x, y = batch()
    backward(model, x, y)
    mon = Monitor(model, num_classes=3)
    with pytest.raises(UsageError, match=match) as info:
        mon.step(loss=loss, outputs=outputs, targets=targets)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"every": 0}, "every must be"), ({"num_classes": 0}, "num_classes"), ({"ddp": True}, "init_process_group")],
)
def test_bad_construction(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        Monitor(tiny(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="nn.Module"):
        Monitor("resnet18")  # type: ignore[arg-type]


def test_all_zero_gradients_warn_once() -> None:
    model = tiny()
    mon = Monitor(model)
    x, y = batch()
    loss, out = backward(model, x, y)
    model.zero_grad(set_to_none=False)  # step called after zero_grad: every gradient is 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2 * SYNC_EVERY):
            mon.step(loss=loss, outputs=out, targets=y)
    assert [str(w.message) for w in caught if "exactly zero" in str(w.message)] == [
        (
            "Monitor.step() saw every gradient exactly zero: call it after loss.backward() and before "
            "optimizer.zero_grad()"
        )
    ]


# ---------------------------------------------------------------------------- state, reports, plots
def _train(model: nn.Module, opt: torch.optim.Optimizer, mon: Monitor, steps: range) -> None:
    for i in steps:
        x, y = batch(seed=i)
        loss, out = backward(model, x, y)
        mon.step(loss=loss, outputs=out, targets=y, optimizer=opt)
        opt.step()
        if i % 20 == 19:
            mon.end_epoch(val_loss=1.0 + 0.01 * i)


def test_state_dict_round_trip_resumes_like_an_uninterrupted_run(tmp_path: object) -> None:
    """Train 100 steps straight vs 60 + checkpoint (torch.save, weights_only load) + 40."""
    model_a = tiny()
    opt_a = torch.optim.SGD(model_a.parameters(), lr=0.5, momentum=0.9)
    mon_a = Monitor(model_a)
    _train(model_a, opt_a, mon_a, range(100))

    model_b = tiny()
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.5, momentum=0.9)
    mon_b = Monitor(model_b)
    _train(model_b, opt_b, mon_b, range(60))
    path = tmp_path / "ckpt.pt"  # type: ignore[operator]
    torch.save({"model": model_b.state_dict(), "opt": opt_b.state_dict(), "monitor": mon_b.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    model_c = tiny()
    model_c.load_state_dict(ckpt["model"])
    opt_c = torch.optim.SGD(model_c.parameters(), lr=0.5, momentum=0.9)
    opt_c.load_state_dict(ckpt["opt"])
    mon_c = Monitor(model_c)
    mon_c.load_state_dict(ckpt["monitor"])
    _train(model_c, opt_c, mon_c, range(60, 100))

    assert mon_a.findings, "the run should raise something, or the comparison below proves little"
    assert [f.to_dict() for f in mon_c.findings] == [f.to_dict() for f in mon_a.findings]
    ha, hc = mon_a.history(), mon_c.history()
    assert hc["loss"] == pytest.approx(ha["loss"]) and hc["loss_step"] == ha["loss_step"]
    assert np.allclose(np.array(hc["grad"]), np.array(ha["grad"]))
    ra, rc = mon_a.report().to_dict(), mon_c.report().to_dict()
    assert rc["epochs"] == ra["epochs"] and rc["steps"] == ra["steps"] == 100
    assert rc["layers"] == ra["layers"] and rc["groups"] == ra["groups"] and rc["loss"] == ra["loss"]


def test_load_state_dict_rejects_another_model() -> None:
    mon = Monitor(tiny())
    other = Monitor(nn.Linear(3, 3))
    with pytest.raises(UsageError, match="different parameters"):
        other.load_state_dict(mon.state_dict())


def test_report_json_summary_and_plots(tmp_path: object) -> None:
    from convdoctor.report import render

    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model)
    _train(model, opt, mon, range(45))
    doc = json.loads(mon.to_json())
    assert doc["kind"] == "monitor" and doc["model"] == "Sequential" and doc["steps"] == 45
    assert set(doc) >= {"convdoctor", "findings", "epochs", "events", "layers", "groups", "loss", "grad_norm"}
    assert [e["epoch"] for e in doc["epochs"]] == [0, 1]
    assert doc["layers"][0]["name"] == "0" and doc["layers"][-1]["name"] == "4"
    text = render(mon.report(), "terminal", width=100)
    assert "convdoctor monitor: Sequential" in text and "epoch" in text
    line = mon.summary()
    assert line.startswith("epoch 1 (step 40): loss ") and "val loss 1.39" in line and "\n" not in line
    from convdoctor.report.monitor_plot import save_monitor_plots

    with pytest.raises(ValueError, match="figures=True"):
        save_monitor_plots(mon.report(), tmp_path)  # type: ignore[arg-type]
    paths = save_monitor_plots(mon.report(figures=True), tmp_path)  # type: ignore[arg-type]
    assert sorted(p.name for p in paths) == [
        "activation_histograms.png",
        "grad_histograms.png",
        "grad_norms.png",
        "loss.png",
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_findings_fire_once_per_episode() -> None:
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # nothing moves: at chance for the whole run
    mon = Monitor(model, num_classes=3)
    with torch.no_grad():
        model[4].weight.zero_()
        model[4].bias.zero_()  # uniform outputs: loss is exactly ln 3
    for i in range(300):
        x, y = batch(seed=i)
        loss, out = backward(model, x, y)
        mon.step(loss=loss, outputs=out, targets=y, optimizer=opt)
        opt.step()
    # uniform outputs: argmax is class 0 for every input from the first step (fires at 50, the
    # first sync with CONST_STEPS of history) and keeps firing: reported once. The loss at chance
    # (from step 100) is a consequence, attached to a root rather than reported.
    constant = [f for f in mon.findings if f.code == "CONSTANT_PREDICTION"]
    assert len(constant) == 1 and constant[0].evidence["step"] == 50
    attached = [c["code"] for f in mon.findings for c in f.evidence.get("consequences", [])]
    assert attached.count("LOSS_AT_CHANCE") == 1 and "LOSS_AT_CHANCE" not in [f.code for f in mon.findings]


def _synthetic_report() -> MonitorReport:
    """A report with fixed numbers (the renderer is under test, not a training run)."""
    finding = make_finding(
        "DEAD_RELU",
        "41 of 64 units in layer3.conv2 (Conv2d) had zero gradient for the last 200 steps.",
        evidence={"dead": 41, "units": 64, "step": 250},
        where="layer3.conv2",
        fix="lower the learning rate",
    )
    return MonitorReport(
        model="ResNet",
        findings=(finding,),
        steps=300,
        every=1,
        num_classes=10,
        loss={"initial": 2.31, "best": 0.42, "best_step": 120, "last": 0.97},
        grad_norm={"initial": 1.5, "last": 0.2},
        epochs=(
            {"epoch": 0, "step": 150, "train_loss": 1.2, "train_acc": 0.61, "val_loss": 0.9, "val_acc": 0.7},
            {"epoch": 1, "step": 300, "train_loss": 0.8, "train_acc": 0.75, "val_loss": None, "val_acc": None},
        ),
        events=({"step": 250, "code": "DEAD_RELU", "where": "layer3.conv2"},),
        layers=tuple(
            {
                "name": f"layer{i}.conv",
                "grad_norm": 0.1 * (i + 1),
                "weight_norm": 2.0,
                "relative_grad": 0.05 * (i + 1),
                "units": 64,
                "dead_units": 41 if i == 3 else 0,
            }
            for i in range(14)
        ),
        groups=(
            {"name": "backbone", "lr": 0.01, "update_ratio": 0.0012},
            {"name": "head", "lr": 0.1, "update_ratio": 0.0085},
        ),
        summary="epoch 1 (step 300): loss 0.8, acc 75.0%, 1 findings: DEAD_RELU (step 250)",
    )


def test_terminal_golden(golden: Callable[[str, str], None]) -> None:
    from convdoctor.report import render

    text = render(_synthetic_report(), "terminal", width=110)
    golden("monitor_terminal.txt", text)
    assert "... 2 more" in text and "41 / 64" in text  # 14 layers: 6 first, 6 last


def test_html_section_embeds_the_plots() -> None:
    from convdoctor.report import render

    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model)
    _train(model, opt, mon, range(30))
    page = render(mon.report(figures=True), "html")
    assert page.count("data:image/png;base64,") == 4 and "<h3>Epochs</h3>" in page and "<h3>Layers" in page
    assert "mon.report(figures=True)" in render(mon.report(), "html")
    assert "history" not in mon.report(figures=True).to_dict()
