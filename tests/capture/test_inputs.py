"""Every input form in every verb, from Python: one normaliser, numbers checked against an oracle.

Oracles: parameters = ``sum(p.numel())``; MACs = half of ``torch.utils.flop_counter.FlopCounterMode``
on a real forward with the same arguments (conv and linear only, which is all these models
cost); the batch a model receives = a forward pre-hook on the model itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import convdoctor
from convdoctor.capture.inputs import InputForm, normalize_input
from convdoctor.capture.prepare import prepare_model
from convdoctor.errors import ModelLoadError, UsageError
from tests.capture.kw_models import DETECTOR_SIDE, kw_net, toy_detector, two_inputs

FAST_BENCH = {"min_run_time": 0.0, "min_samples": 3, "warmup": 1, "cold_start": False, "profile": False, "probe": False}


def oracle_macs(model: nn.Module, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> int:
    """FLOPs / 2 of a real eval forward (FlopCounterMode counts conv/linear at 2 FLOPs per MAC)."""
    model = model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*args, **(kwargs or {}))
    return counter.get_total_flops() // 2


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def seen_batches(model: nn.Module) -> list[tuple[int, ...]]:
    """Records the shape of the ``pixel_values`` keyword argument of each call (``()`` when it came
    positionally, which a keyword input must never do)."""
    seen: list[tuple[int, ...]] = []

    def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = kwargs.get("pixel_values")
        seen.append(() if x is None else tuple(x.shape))

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


# -- the normaliser itself ---------------------------------------------------------------

X = torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize(
    "size, example, form, n_args, kw, shapes",
    [
        ("1x3x8x8", None, InputForm.SIZE, 1, [], [(1, 3, 8, 8)]),
        ("3x8x8", None, InputForm.SIZE, 1, [], [(1, 3, 8, 8)]),
        ((2, 3, 8, 8), None, InputForm.SIZE, 1, [], [(2, 3, 8, 8)]),
        ("pixel_values=2x3x8x8", None, InputForm.KWARGS, 0, ["pixel_values"], [(2, 3, 8, 8)]),
        (("a=1x3x8x8", "b=1x1x8x8"), None, InputForm.KWARGS, 0, ["a", "b"], [(1, 3, 8, 8), (1, 1, 8, 8)]),
        ({"a": (1, 3, 8, 8)}, None, InputForm.KWARGS, 0, ["a"], [(1, 3, 8, 8)]),
        (None, X, InputForm.TENSOR, 1, [], [(2, 3, 8, 8)]),
        (None, (X, 0.5), InputForm.ARGS, 2, [], [(2, 3, 8, 8)]),
        (None, {"pixel_values": X, "scale": 2.0}, InputForm.KWARGS, 0, ["pixel_values", "scale"], [(2, 3, 8, 8)]),
        (None, [X[0], X[1]], InputForm.IMAGES, 1, [], [(3, 8, 8), (3, 8, 8)]),
        (None, ([X[0]],), InputForm.IMAGES, 1, [], [(3, 8, 8)]),
    ],
)
def test_every_form_becomes_args_and_kwargs(
    size: Any, example: Any, form: InputForm, n_args: int, kw: list[str], shapes: list[tuple[int, ...]]
) -> None:
    call = normalize_input(size, example)
    assert call.form is form
    assert len(call.args) == n_args and list(call.kwargs) == kw
    assert list(call.shapes) == shapes


def test_a_dict_is_keyword_arguments_not_one_positional_dict() -> None:
    call = normalize_input(None, {"pixel_values": X})
    assert call.args == () and call.kwargs["pixel_values"] is X


def test_a_size_becomes_a_list_of_images_for_a_detector() -> None:
    call = normalize_input("2x3x16x16", None, images=True)
    assert call.form is InputForm.IMAGES and isinstance(call.args[0], list) and len(call.args[0]) == 2
    assert call.shapes == ((3, 16, 16), (3, 16, 16))


@pytest.mark.parametrize(
    "size, example, needle",
    [
        (None, 3, "cannot use example_input of type int; give input_size"),
        (None, {1: X}, "keys must be argument names"),
        (None, [3], "list of image tensors"),
        (None, [torch.zeros(1, 3, 8, 8)], "CxHxW tensors"),
        ("1x3x8x8", X, "not both"),
        (("a=1x3x8x8", "1x3x8x8"), None, "several input sizes must each be named"),
        ("1a=1x3x8x8", None, "not a Python name"),
        ("a=1x3x8x8,a=1x3x8x8".split(","), None, "given twice"),
        ("pixel_values=1x3xx8", None, "malformed input size"),
        (3.5, None, "cannot use input_size of type float"),
    ],
)
def test_bad_forms_are_one_line_usage_errors(size: Any, example: Any, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        normalize_input(size, example, default_size=(1, 3, 8, 8))
    assert needle in str(info.value) and "\n" not in str(info.value)


# -- inspect and receptive_field ---------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"example_input": {"pixel_values": torch.randn(2, 3, 12, 12)}},
        {"example_input": {"pixel_values": torch.randn(2, 3, 12, 12), "scale": 3.0}},
        {"example_input": (torch.randn(2, 3, 12, 12), 3.0)},
        {"example_input": torch.randn(2, 3, 12, 12)},
        {"input_size": "pixel_values=2x3x12x12"},
        {"input_size": {"pixel_values": (2, 3, 12, 12)}},
        {"input_size": (2, 3, 12, 12)},
    ],
)
def test_inspect_counts_every_form_like_a_real_forward(kwargs: dict[str, Any]) -> None:
    model = kw_net()
    report = convdoctor.inspect(model, **kwargs)
    assert report.totals["params"] == n_params(model)
    assert report.totals["macs"] == oracle_macs(model, kwargs={"pixel_values": torch.randn(2, 3, 12, 12)})


def test_inspect_two_keyword_tensors_and_a_detector_image_list() -> None:
    model = two_inputs()
    image, mask = torch.randn(1, 3, 10, 10), torch.randn(1, 1, 10, 10)
    report = convdoctor.inspect(model, example_input={"image": image, "mask": mask})
    assert report.totals["macs"] == oracle_macs(model, kwargs={"image": image, "mask": mask})
    assert report.input_shapes == ((1, 3, 10, 10), (1, 1, 10, 10))
    det = toy_detector()
    images = [torch.randn(3, DETECTOR_SIDE, DETECTOR_SIDE) for _ in range(2)]
    expected = oracle_macs(det, (images,))
    for form in (
        {"example_input": images},
        {"example_input": (images,)},
        {"input_size": f"2x3x{DETECTOR_SIDE}x{DETECTOR_SIDE}"},
    ):
        assert convdoctor.inspect(det, **form).totals["macs"] == expected, form


def test_receptive_field_with_keyword_input() -> None:
    # two stacked 3x3 convolutions, stride 1: field 3 after the first, 5 after the second
    report = convdoctor.receptive_field(kw_net(), example_input={"pixel_values": torch.randn(1, 3, 16, 16)})
    sizes = {layer.name: layer.size for layer in report.layers}
    assert sizes["conv1"] == (3, 3) and sizes["conv2"] == (5, 5)
    assert report.input_shape == (1, 3, 16, 16)
    same = convdoctor.receptive_field(kw_net(), "pixel_values=1x3x16x16")
    assert {layer.name: layer.size for layer in same.layers} == sizes
    with pytest.raises(UsageError, match="method='analytic'"):
        convdoctor.receptive_field(kw_net(), "pixel_values=1x3x16x16", method="gradient")


# -- audit -----------------------------------------------------------------------------


def test_audit_runs_a_keyword_model_on_its_keyword_input() -> None:
    model = kw_net(train=True)  # BN in training mode: the modes check must see it through the keyword call
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = seen_batches(model)
    sample = {"pixel_values": torch.randn(8, 3, 8, 8), "scale": 2.0}
    report = convdoctor.audit(model, sample, checks="modes,batch,export", batch_sizes=(1, 4))
    codes = {f.code for f in report.findings}
    assert "BN_TRAIN_MODE" in codes
    status = {c.name: c.status.value for c in report.checks}
    assert status["export"] == "skipped" and "keyword" in report.checks[2].evidence["reason"]
    assert seen and () not in seen, "a check called the model without its keyword input"
    assert {s[1:] for s in seen} == {(3, 8, 8)} and {s[0] for s in seen} >= {1, 4}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and model.training


def test_audit_example_input_name_and_keyword_sizes() -> None:
    model = kw_net().eval()
    seen = seen_batches(model)
    report = convdoctor.audit(
        model, example_input={"pixel_values": torch.randn(4, 3, 8, 8)}, checks="batch", batch_sizes=(1, 4)
    )
    assert report.input["shape"] == [4, 3, 8, 8] and not report.input["synthetic"]
    synthetic = convdoctor.audit(model, input_size="pixel_values=1x3x8x8", checks="batch", batch_sizes=(1, 2))
    assert synthetic.input["synthetic"] and synthetic.input["shape"][1:] == [3, 8, 8]
    assert seen and all(len(s) == 4 for s in seen)


def test_audit_varies_one_tensor_only() -> None:
    with pytest.raises(UsageError, match="varies the batch of one input tensor"):
        convdoctor.audit(two_inputs(), {"image": torch.randn(4, 3, 8, 8), "mask": torch.randn(4, 1, 8, 8)})
    with pytest.raises(UsageError, match="not both"):
        convdoctor.audit(kw_net(), torch.randn(2, 3, 8, 8), example_input=torch.randn(2, 3, 8, 8))


def test_audit_a_detector_on_a_list_of_images() -> None:
    det = toy_detector()
    images = [torch.randn(3, DETECTOR_SIDE, DETECTOR_SIDE) for _ in range(4)]
    report = convdoctor.audit(det, images, checks="modes,determinism", batch_sizes=(1, 2))
    assert not [f for f in report.findings if f.severity.value == "error"]
    assert report.input["shape"] == [4, 3, DETECTOR_SIDE, DETECTOR_SIDE]


SPEC = "tests.capture.kw_models:kw_net"


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kw_net's state with a NaN in the BatchNorm running mean: only a loaded checkpoint has it."""
    state = kw_net().state_dict()
    state["bn.running_mean"][0] = float("nan")
    path = tmp_path_factory.mktemp("ckpt") / "nan.pt"
    torch.save(state, path)
    return path


def test_audit_accepts_a_model_spec_with_weights_like_the_cli(nan_checkpoint: Path) -> None:
    size = "pixel_values=1x3x8x8"
    plain = convdoctor.audit(SPEC, input_size=size, checks="bn_stats")
    assert plain.model == SPEC and "BN_STATS_INVALID" not in {f.code for f in plain.findings}
    loaded = convdoctor.audit(SPEC, input_size=size, checks="bn_stats", weights=nan_checkpoint)
    assert "BN_STATS_INVALID" in {f.code for f in loaded.findings}


def test_weights_load_with_weights_only(tmp_path: Path) -> None:
    bad = tmp_path / "pickled.pt"
    torch.save({"model": kw_net()}, bad)  # a whole pickled module: refused by weights_only=True
    with pytest.raises(ModelLoadError, match="weights_only=True"):
        convdoctor.audit(SPEC, input_size="pixel_values=1x3x8x8", weights=bad)
    with pytest.raises(UsageError, match="MODEL spec"):
        prepare_model(kw_net(), weights=bad)


@pytest.mark.parametrize("mode, train_mode_found", [("auto", False), ("eval", False), ("as-is", True)])
def test_audit_mode_rule_is_the_api_s(mode: str, train_mode_found: bool) -> None:
    report = convdoctor.audit(f"{SPEC}?train=True", input_size="pixel_values=1x3x8x8", checks="modes", mode=mode)
    assert ("BN_TRAIN_MODE" in {f.code for f in report.findings}) is train_mode_found


def test_eval_mode_on_a_callers_module_works_on_a_copy() -> None:
    model = kw_net(train=True)
    loaded = prepare_model(model, mode="eval")
    assert model.training and not loaded.module.training and loaded.module is not model


# -- bench, compare, check ---------------------------------------------------------------


def test_bench_feeds_the_keyword_input_at_each_batch_size() -> None:
    model = kw_net().eval()
    seen = seen_batches(model)
    x = torch.randn(2, 3, 8, 8)
    report = convdoctor.bench(model, example_input={"pixel_values": x, "scale": 2.0}, batch_sizes=(1, 3), **FAST_BENCH)
    assert [r.batch_size for r in report.rows] == [1, 3]
    assert seen and () not in seen, "bench called the model without its keyword input"
    assert {s for s in seen if s[0] == 3} == {(3, 3, 8, 8)}
    assert report.rows[1].macs == oracle_macs(model, kwargs={"pixel_values": torch.randn(3, 3, 8, 8)})
    sized = convdoctor.bench(model, "pixel_values=1x3x8x8", batch_sizes=2, **FAST_BENCH)
    assert sized.rows[0].macs == oracle_macs(model, kwargs={"pixel_values": torch.randn(2, 3, 8, 8)})


def test_bench_a_detector_and_compare_with_keyword_input() -> None:
    det = toy_detector()
    report = convdoctor.bench(det, f"3x{DETECTOR_SIDE}x{DETECTOR_SIDE}", batch_sizes=(1, 2), **FAST_BENCH)
    images = [torch.randn(3, DETECTOR_SIDE, DETECTOR_SIDE) for _ in range(2)]
    assert report.rows[1].macs == oracle_macs(det, (images,))
    both = convdoctor.compare({"a": kw_net(), "b": kw_net()}, "pixel_values=1x3x8x8", **FAST_BENCH)
    assert [r.model for r in both.rows] == ["a", "b"]


def test_check_with_keyword_input_runs_every_verb() -> None:
    model = kw_net().eval()
    x = torch.randn(4, 3, 8, 8)
    report = convdoctor.check(model, example_input={"pixel_values": x}, batch_sizes=(1, 2), bench=False)
    assert set(report.parts) == {"inspect", "rf", "audit"} and not report.skipped
    assert report.parts["inspect"].totals["macs"] == oracle_macs(model, kwargs={"pixel_values": x})
