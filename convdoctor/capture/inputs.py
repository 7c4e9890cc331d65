"""Input specs ("1x3x224x224") and example inputs (real, meta)."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import UsageError
from .choices import Choice

_SPEC = re.compile(r"^\d+(x\d+)*$")

#: Every ``input_size`` form: ``"1x3x224x224"``, a shape, ``"name=1x3x8x8"`` strings, ``{name: shape}``.
InputSize = str | Sequence[int] | Sequence[str] | Mapping[str, str | Sequence[int]] | None

#: Default input when none is given: one ImageNet-sized RGB image.
DEFAULT_INPUT_SIZE: tuple[int, ...] = (1, 3, 224, 224)


def parse_input_spec(spec: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """Parse ``"1x3x224x224"`` (or ``"3x224x224"``, meaning batch 1) into a shape tuple.

    A three-part *string* gets a batch of 1 (the CLI convention); a sequence of ints is
    taken literally, so ``(2, 5, 16)`` stays a batch of 2 sequences.

    Args:
        spec: a string like ``1x3x224x224``, a sequence of ints, or None.

    Returns:
        The shape with a batch dimension, or None when spec is None.

    Raises:
        UsageError: malformed spec or non-positive dimension.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        text = spec.strip().lower().replace(",", "x").replace("*", "x").replace(" ", "")
        if not _SPEC.match(text):
            raise UsageError(f"malformed input size {spec!r}: expected NxCxHxW like 1x3x224x224 (or CxHxW)")
        dims = tuple(int(d) for d in text.split("x"))
    else:
        try:
            dims = tuple(int(d) for d in spec)
        except (TypeError, ValueError):
            raise UsageError(f"malformed input size {spec!r}: expected a sequence of ints") from None
    if len(dims) < 2:
        raise UsageError(f"input size {spec!r} has {len(dims)} dim(s); give at least CxL, e.g. 3x224x224")
    if any(d <= 0 for d in dims):
        raise UsageError(f"input size {spec!r} has a dimension <= 0; every dimension must be positive")
    if len(dims) == 3 and isinstance(spec, str):
        dims = (1, *dims)
    return dims


def format_shape(shape: Sequence[int]) -> str:
    """``(1, 3, 224, 224)`` -> ``"1x3x224x224"``."""
    return "x".join(str(int(d)) for d in shape)


def make_input(
    shape: Sequence[int], *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, seed: int = 0
) -> torch.Tensor:
    """A reproducible random input of the given shape (meta tensors are allocated empty)."""
    dtype = dtype or torch.get_default_dtype()
    if torch.device(device).type == "meta":
        return torch.empty(tuple(shape), device="meta", dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tuple(shape), generator=gen, dtype=torch.float32)
    return x.to(device=device, dtype=dtype)


def to_meta(value: Any) -> Any:
    """Replace every tensor inside a nested structure with an empty meta tensor of the same meta-data."""
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
    if isinstance(value, (list, tuple)):
        return type(value)(to_meta(v) for v in value)
    if isinstance(value, dict):
        return {k: to_meta(v) for k, v in value.items()}
    return value


def map_tensors(fn: Callable[[torch.Tensor], Any], value: Any) -> Any:
    """Apply ``fn`` to every tensor inside nested tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(fn, v) for v in value)
    if isinstance(value, dict):
        return {k: map_tensors(fn, v) for k, v in value.items()}
    return value


def tensor_leaves(value: Any) -> list[torch.Tensor]:
    """Every tensor inside nested tuples, lists and dicts, in order."""
    found: list[torch.Tensor] = []
    map_tensors(found.append, value)
    return found


def as_args(example_input: Any) -> tuple[Any, ...]:
    """A single tensor becomes ``(x,)``; a tuple or list is the positional arguments."""
    if isinstance(example_input, (tuple, list)):
        return tuple(example_input)
    return (example_input,)


# -- every input form, one normaliser -------------------------------------------------

#: How the forms read, for every error message about them.
INPUT_FORMS = (
    "input_size '1x3x224x224' (or CxHxW, a shape tuple, or keyword sizes 'name=1x3x224x224'), or "
    "example_input = a tensor, a tuple of positional args, a list of image tensors, or a dict of "
    "keyword args"
)


@enum.unique
class InputForm(Choice):
    """Which form the caller gave: the normaliser's record of it."""

    SIZE = "size"  # "1x3x224x224" or (1, 3, 224, 224): one positional tensor
    TENSOR = "tensor"  # example_input=x
    ARGS = "args"  # example_input=(x, y, ...): positional arguments
    IMAGES = "images"  # example_input=[img, ...] or ([img, ...],), or a size for a detector
    KWARGS = "kwargs"  # example_input={"pixel_values": x} or "pixel_values=1x3x224x224"


@dataclass(frozen=True)
class ModelInput:
    """A model's call, normalised: ``model(*args, **kwargs)``, and where its batch lives.

    Attributes:
        args: positional arguments (tensors may be on the meta device).
        kwargs: keyword arguments.
        form: the form the caller used.
        slot: where the batched tensor sits: ``("args", i)``, ``("kwargs", name)``, or
            ``("images", 0)`` for a list of images as the first positional argument; None
            when no tensor was given.
    """

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    form: InputForm = InputForm.SIZE
    slot: tuple[str, int | str] | None = None

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Every tensor leaf, positional first, in order."""
        return tuple(tensor_leaves((self.args, self.kwargs)))

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """The shape of every tensor leaf, positional first."""
        return tuple(tuple(int(d) for d in t.shape) for t in self.tensors)

    @property
    def primary(self) -> torch.Tensor | list[torch.Tensor] | None:
        """The batched input: the tensor in ``slot`` (for images, the list)."""
        if self.slot is None:
            return None
        where, key = self.slot
        if where == "kwargs":
            return self.kwargs[str(key)]  # type: ignore[no-any-return]
        return self.args[int(key)]  # type: ignore[no-any-return]

    @property
    def primary_shape(self) -> tuple[int, ...] | None:
        """``(N, C, *spatial)`` of the batched input; images count as the batch of a list."""
        value = self.primary
        if isinstance(value, list):
            return (len(value), *(int(d) for d in value[0].shape)) if value else None
        return None if value is None else tuple(int(d) for d in value.shape)

    def bind(self, x: torch.Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call with the batched input replaced by ``x`` (``(N, ...)``; images are its rows)."""
        if self.slot is None:
            raise UsageError("this input has no tensor to vary; give " + INPUT_FORMS)
        where, key = self.slot
        value: Any = list(x.unbind(0)) if where == "images" else x
        if where == "kwargs":
            return self.args, {**self.kwargs, str(key): value}
        args = list(self.args)
        args[int(key)] = value
        return tuple(args), dict(self.kwargs)

    def batched(self, *, require_one: str | None = None) -> torch.Tensor:
        """The batched input as one ``(N, ...)`` tensor (images stacked).

        Args:
            require_one: the verb's name when it can vary only one tensor (audit, bench): then
                any other tensor argument is a usage error.

        Raises:
            UsageError: no tensor, images of different sizes, or (with ``require_one``) more
                than one tensor argument.
        """
        value = self.primary
        if value is None:
            raise UsageError("no input tensor given; give " + INPUT_FORMS)
        if require_one is not None:
            others = len(self.tensors) - (len(value) if isinstance(value, list) else 1)
            if others:
                raise UsageError(
                    f"{require_one} varies the batch of one input tensor, but this call has "
                    f"{len(self.tensors)} tensors ({', '.join(map(format_shape, self.shapes))}); "
                    "pass a single batched tensor (positional or keyword)"
                )
        if not isinstance(value, list):
            return value
        if len({tuple(v.shape) for v in value}) != 1:
            raise UsageError(
                "the images have different sizes ("
                + ", ".join(format_shape(v.shape) for v in value)
                + "); give images of one size to vary the batch"
            )
        return torch.stack(value)


def takes_image_list(model: Any) -> bool:
    """True for torchvision's detection models, which take a list of ``CxHxW`` images.

    They all normalise and batch their input with a ``GeneralizedRCNNTransform`` held as
    ``model.transform``; the name test keeps torchvision out of the import path.
    """
    return type(getattr(model, "transform", None)).__name__ == "GeneralizedRCNNTransform"


def _sizes_by_name(input_size: Any) -> dict[str, tuple[int, ...]] | None:
    """``"name=1x3x8x8"``, a list of such strings, or ``{"name": shape}`` -> shapes by name."""
    pairs: list[tuple[Any, Any]]
    if isinstance(input_size, Mapping):
        pairs = list(input_size.items())
    elif isinstance(input_size, str) and "=" in input_size:
        pairs = [tuple(input_size.split("=", 1))]  # type: ignore[list-item]
    elif isinstance(input_size, (list, tuple)) and any(isinstance(s, str) for s in input_size):
        if not all(isinstance(s, str) and "=" in s for s in input_size):
            raise UsageError(
                f"several input sizes must each be named, e.g. pixel_values=1x3x224x224; got "
                f"{', '.join(map(str, input_size))}"
            )
        pairs = [(s.split("=", 1)[0], s.split("=", 1)[1]) for s in input_size]
    else:
        return None
    out: dict[str, tuple[int, ...]] = {}
    for name, shape in pairs:
        name = str(name).strip()
        if not name.isidentifier():
            raise UsageError(f"keyword input {name!r} is not a Python name; write name=1x3x224x224")
        if name in out:
            raise UsageError(f"keyword input {name!r} given twice")
        parsed = parse_input_spec(shape)
        assert parsed is not None
        out[name] = parsed
    return out


def _from_example(example_input: Any) -> ModelInput:
    if isinstance(example_input, torch.Tensor):
        return ModelInput((example_input,), {}, InputForm.TENSOR, ("args", 0))
    if isinstance(example_input, dict):
        if not all(isinstance(k, str) for k in example_input):
            raise UsageError("a dict example_input is keyword arguments: its keys must be argument names (str)")
        kwargs = dict(example_input)
        name = next((k for k, v in kwargs.items() if isinstance(v, torch.Tensor)), None)
        return ModelInput((), kwargs, InputForm.KWARGS, None if name is None else ("kwargs", name))
    if isinstance(example_input, list):
        return _images((example_input,), InputForm.IMAGES)
    if isinstance(example_input, tuple):
        if len(example_input) >= 1 and _is_image_list(example_input[0]):
            return _images(example_input, InputForm.IMAGES)
        index = next((i for i, v in enumerate(example_input) if isinstance(v, torch.Tensor)), None)
        return ModelInput(example_input, {}, InputForm.ARGS, None if index is None else ("args", index))
    raise UsageError(f"cannot use example_input of type {type(example_input).__name__}; give " + INPUT_FORMS)


def _is_image_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, torch.Tensor) for v in value)


def _images(args: tuple[Any, ...], form: InputForm) -> ModelInput:
    if not _is_image_list(args[0]):
        raise UsageError(
            "a list example_input is a list of image tensors (detection models): "
            f"every item must be a CxHxW tensor; give {INPUT_FORMS}"
        )
    if any(t.dim() != 3 for t in args[0]):
        raise UsageError(
            "a list of images holds CxHxW tensors, got " + ", ".join(format_shape(t.shape) for t in args[0])
        )
    return ModelInput(tuple(args), {}, form, ("images", 0))


def normalize_input(
    input_size: Any = None,
    example_input: Any = None,
    *,
    default_size: Sequence[int] | None = None,
    images: bool = False,
) -> ModelInput:
    """Turn every input form into one call, ``model(*args, **kwargs)``.

    The forms, the same in every verb: ``input_size`` (``"1x3x224x224"``, ``"3x800x800"``
    meaning batch 1, a shape tuple, or keyword sizes ``"pixel_values=1x3x224x224"`` /
    ``{"pixel_values": (1, 3, 224, 224)}``), or ``example_input``: a tensor, a tuple of
    positional arguments, a list of image tensors (also ``([img, ...],)``), or a dict of
    keyword arguments (torchinfo's convention). Sizes become meta tensors; examples are
    used as given.

    Args:
        input_size: a size form, or None.
        example_input: an example form, or None.
        default_size: the size to use when neither is given (a spec's suggestion).
        images: the model takes a list of images (:func:`takes_image_list`): a size
            ``NxCxHxW`` becomes a list of ``N`` meta images.

    Returns:
        The normalised call.

    Raises:
        UsageError: both or neither given (and no default), or a malformed form; the one
            line names the valid forms.
    """
    if example_input is not None and input_size is not None:
        raise UsageError("give input_size or example_input, not both")
    if example_input is not None:
        return _from_example(example_input)
    named = _sizes_by_name(input_size)
    if named is not None:
        kwargs = {k: make_input(s, device="meta") for k, s in named.items()}
        return ModelInput((), kwargs, InputForm.KWARGS, ("kwargs", next(iter(kwargs))))
    if input_size is not None and not isinstance(input_size, (str, Sequence)):
        raise UsageError(f"cannot use input_size of type {type(input_size).__name__}; give " + INPUT_FORMS)
    shape = parse_input_spec(input_size) or (tuple(default_size) if default_size else None)
    if shape is None:
        raise UsageError("the input size is unknown: pass input_size (e.g. 1x3x224x224) or example_input")
    x = make_input(shape, device="meta")
    if images:
        if len(shape) != 4:
            raise UsageError(f"a detection model takes CxHxW images; got input size {format_shape(shape)}")
        return ModelInput((list(x.unbind(0)),), {}, InputForm.IMAGES, ("images", 0))
    return ModelInput((x,), {}, InputForm.SIZE, ("args", 0))


def materialize(
    value: Any, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, seed: int = 0
) -> Any:
    """Replace meta tensors in a nested structure by reproducible random ones on ``device``.

    Real tensors are moved to ``device`` (and floating ones cast to ``dtype``).
    """
    counter = iter(range(seed, seed + 1_000_000))

    def real(v: torch.Tensor) -> torch.Tensor:
        if v.device.type == "meta":
            return make_input(
                v.shape, device=device, dtype=dtype if v.is_floating_point() else v.dtype, seed=next(counter)
            )
        return v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)

    return map_tensors(real, value)
