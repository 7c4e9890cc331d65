"""The CLI's choices are the API's enums: every click option built from one, and every member real.

pip-audit's ``test_to_format_is_exhaustive`` in spirit: a member added to an enum and not to
the CLI (or the reverse), or a member that maps to nothing in torch, fails here.
"""

from __future__ import annotations

import enum

import click
import pytest
import torch
from click.testing import CliRunner

import convdoctor
from convdoctor.capture.choices import Device, Dtype, Mode, ModelMode, RFMethod, parse_batch_sizes, parse_dtype
from convdoctor.capture.prepare import prepare_model
from convdoctor.cli import main
from convdoctor.cli._exit import FailOn
from convdoctor.cli._options import EnumChoice
from convdoctor.errors import UsageError
from tests.capture.kw_models import kw_net


def _option(verb: str, name: str) -> click.Option:
    ctx = click.Context(main)
    command = main.get_command(ctx, verb)
    assert command is not None
    return next(p for p in command.params if isinstance(p, click.Option) and p.name == name)


#: (verb, option) -> the enum its choices come from; every verb that has the option is listed.
MAPPING: dict[tuple[str, str], type[enum.StrEnum]] = {
    ("audit", "device"): Device,
    ("bench", "device"): Device,
    ("check", "device"): Device,
    ("bench", "dtype"): Dtype,
    ("inspect", "dtype"): Dtype,
    ("audit", "mode"): ModelMode,
    ("check", "mode"): ModelMode,
    ("rf", "method"): RFMethod,
    ("inspect", "mode"): Mode,
}


@pytest.mark.parametrize("verb, name", sorted(MAPPING))
def test_cli_choices_are_the_enum(verb: str, name: str) -> None:
    param = _option(verb, name)
    assert isinstance(param.type, EnumChoice) and param.type.enum_type is MAPPING[(verb, name)]
    assert list(param.type.choices) == [m.value for m in MAPPING[(verb, name)]]


@pytest.mark.parametrize("verb", ["inspect", "rf", "audit", "bench", "check"])
def test_every_verb_with_a_choice_option_is_in_the_mapping(verb: str) -> None:
    ctx = click.Context(main)
    command = main.get_command(ctx, verb)
    assert command is not None
    for p in command.params:
        if isinstance(p.type, click.Choice) and p.name not in ("fail_on", "optimizer"):
            assert (verb, p.name) in MAPPING, (verb, p.name)


def test_fail_on_and_check_and_optimizer_lists_match_the_api() -> None:
    from convdoctor.advice import OPTIMIZER_STATE
    from convdoctor.audit import list_checks
    from convdoctor.cli import _audit, _inspect

    for verb in ("inspect", "rf", "audit", "bench", "check"):
        assert list(_option(verb, "fail_on").type.choices) == [f.value for f in FailOn]  # type: ignore[attr-defined]
    assert list(_audit.CHECKS) == list_checks()
    assert sorted(_inspect.OPTIMIZERS) == sorted(OPTIMIZER_STATE)


def test_every_member_maps_to_something_real() -> None:
    for device in Device:
        assert torch.device(device.value).type == device.value
    for dtype in Dtype:
        assert isinstance(dtype.torch, torch.dtype) and parse_dtype(dtype.torch) is dtype
    model = kw_net(train=True)
    for mode in ModelMode:
        assert prepare_model(model, mode=mode).module.training is (mode is not ModelMode.EVAL)
    for inspect_mode in Mode:
        assert convdoctor.inspect(kw_net(), "pixel_values=1x3x8x8", mode=inspect_mode).mode == inspect_mode.value
    for method in RFMethod:
        assert convdoctor.receptive_field(kw_net(), (1, 3, 8, 8), method=method).method == method.value


@pytest.mark.parametrize(
    "args, needle",
    [
        (["audit", "torchvision:resnet18", "--device", "tpu"], "unknown device 'tpu': choose cpu or cuda"),
        (["bench", "torchvision:resnet18", "--dtype", "int4"], "unsupported dtype 'int4': choose float32"),
        (["inspect", "torchvision:resnet18", "--dtype", "int4"], "unsupported dtype 'int4'"),
        (["audit", "torchvision:resnet18", "--mode", "train"], "unknown mode 'train': choose auto, as-is or eval"),
        (["rf", "torchvision:resnet18", "--method", "magic"], "choose analytic or gradient"),
    ],
)
def test_a_bad_choice_is_one_line_exit_2(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("verb", ["audit", "bench", "check"])
def test_one_batch_size_parser_for_every_verb(verb: str) -> None:
    result = CliRunner().invoke(main, [verb, "tests.capture.kw_models:kw_net", "--batch-sizes", "1,x"])
    assert result.exit_code == 2
    with pytest.raises(UsageError) as info:
        parse_batch_sizes("1,x")
    assert result.stderr.strip() == f"convdoctor: error: {info.value}"


def test_batch_size_parser() -> None:
    assert (
        parse_batch_sizes("8, 1,8") == (1, 8) and parse_batch_sizes(4) == (4,) and parse_batch_sizes([2, 1]) == (1, 2)
    )
    for bad, needle in (
        ("0", "not positive"),
        ("", "no batch size"),
        ([True], "not an integer"),
        ("1.5", "not an integer"),
    ):
        with pytest.raises(UsageError, match=needle):
            parse_batch_sizes(bad)
