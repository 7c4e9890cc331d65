"""Turn a MODEL spec into an ``nn.Module``.

Specs: ``torchvision:NAME[?key=value,...]``, ``pkg.module:factory[?kw=v]``,
``path/to/file.py:factory[?kw=v]``, a TorchScript ``.pt`` file, or an exported ``.pt2``.
Checkpoints (``--weights``) load with ``weights_only=True``; ``.pt2`` files are vetted before
torch reads them and TorchScript files load only when trusted (:mod:`.archive`).
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelLoadError, UsageError
from .archive import load_exported, load_torchscript
from .inputs import DEFAULT_INPUT_SIZE


@dataclass
class LoadedModel:
    """A module built from a spec.

    Attributes:
        module: the model (on the meta device when ``on_meta``).
        spec: the spec it came from.
        default_input_size: the input the spec suggests (a torchvision model's eval crop), if any.
        rebuild: builds a fresh real-weight CPU copy, for paths that must run real tensors.
        on_meta: the module's parameters live on the meta device (no weights allocated).
        fresh: built just now by a factory, so its train/eval flags are the constructor's
            defaults and say nothing about how the user runs it (mode lints are skipped).
    """

    module: nn.Module
    spec: str
    default_input_size: tuple[int, ...] | None = None
    rebuild: Callable[[], nn.Module] | None = None
    on_meta: bool = False
    fresh: bool = False


def _parse_kwargs(text: str, spec: str) -> dict[str, Any]:
    """``a=1,b=true,c=x`` -> ``{"a": 1, "b": True, "c": "x"}`` (Python literals where they parse).

    ``&`` separates keywords too, as in a URL query (``?min_size=224&max_size=224``).
    """
    out: dict[str, Any] = {}
    if not text:
        return out
    for part in re.split(r"[,&]", text):
        if not part.strip():
            continue
        if "=" not in part:
            raise UsageError(f"bad keyword {part!r} in {spec!r}: expected key=value")
        key, raw = (s.strip() for s in part.split("=", 1))
        if not key.isidentifier():
            raise UsageError(f"bad keyword name {key!r} in {spec!r}")
        lowered = raw.lower()
        if lowered in ("true", "false"):
            out[key] = lowered == "true"
        elif lowered == "none":
            out[key] = None
        else:
            try:
                out[key] = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                out[key] = raw
    return out


def _check_module(obj: Any, spec: str) -> nn.Module:
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{spec!r} gave a {type(obj).__name__}, not a torch.nn.Module")
    return obj


@contextlib.contextmanager
def _params_on_meta() -> Iterator[None]:
    """Move every parameter and buffer to meta as it is registered.

    The fallback for factories that compute with tensors (RegNet derives its widths with
    ``torch.pow(...).tolist()``), which a meta default device breaks. Tensors are still
    allocated empty on the CPU first (no init compute), then dropped.
    """
    register_parameter = nn.Module.register_parameter
    register_buffer = nn.Module.register_buffer

    def reg_param(self: nn.Module, name: str, param: Any) -> None:
        register_parameter(self, name, param)
        p = self._parameters.get(name)
        if p is not None and p.device.type != "meta":
            self._parameters[name] = type(p)(p.to("meta"), requires_grad=p.requires_grad)

    def reg_buffer(self: nn.Module, name: str, tensor: Any, persistent: bool = True) -> None:
        register_buffer(self, name, tensor.to("meta") if isinstance(tensor, torch.Tensor) else tensor, persistent)

    nn.Module.register_parameter = reg_param  # type: ignore[method-assign]
    nn.Module.register_buffer = reg_buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]


def _exited(exc: SystemExit, what: str) -> ModelLoadError:
    """A user's ``sys.exit``/``exit()`` as a load error: never the process's (silent) exit status."""
    return ModelLoadError(f"{what} called sys.exit({exc.code!r}) instead of returning a torch.nn.Module")


def _call_factory(factory: Callable[..., Any], kwargs: dict[str, Any], spec: str, meta: bool) -> nn.Module:
    if meta:
        # cheapest first: a meta default device; then meta-on-registration; then real
        for ctx in (lambda: torch.device("meta"), _params_on_meta):
            try:
                with ctx():
                    return _check_module(factory(**kwargs), spec)
            except ModelLoadError:
                raise
            except SystemExit as exc:
                raise _exited(exc, f"the factory in {spec!r}") from None
            except Exception:  # retried below, and reported from the real build if that fails too
                continue
    try:
        obj = factory(**kwargs)
    except SystemExit as exc:
        raise _exited(exc, f"the factory in {spec!r}") from None
    except Exception as exc:  # a user factory can raise anything; report it in one line
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ModelLoadError(f"factory in {spec!r} raised {type(exc).__name__}: {first}") from exc
    return _check_module(obj, spec)


#: torchvision builder arguments that name pretrained weights (fetched from the internet).
_DOWNLOADED = ("weights", "weights_backbone")


@contextlib.contextmanager
def _no_downloads(spec: str) -> Iterator[None]:
    """Make any attempt to fetch weights through ``torch.hub`` fail at once, with the spec named.

    A MODEL spec builds random weights throughout; a builder that still reaches for a file
    (a new default we do not know of) must fail fast and clearly, never hang offline.
    """
    import torch.hub

    def refuse(url: str, *args: Any, **kwargs: Any) -> None:
        raise ModelLoadError(
            f"building {spec!r} tried to download {url}; convdoctor builds random weights "
            "only: pass a state_dict checkpoint with --weights"
        )

    # every torch.hub fetch (torchvision's weights included) goes through this one function
    saved = torch.hub.download_url_to_file
    torch.hub.download_url_to_file = refuse
    try:
        yield
    finally:
        torch.hub.download_url_to_file = saved


def _torchvision(name: str, kwargs: dict[str, Any], spec: str, meta: bool) -> LoadedModel:
    try:
        import torchvision.models as tvm
    except ImportError as exc:  # optional: convdoctor does not pin the user's torchvision
        raise ModelLoadError(
            f"{spec!r} needs torchvision: pip install torchvision (the release built for your "
            f"torch {torch.__version__}), or pip install 'convdoctor[vision]'"
        ) from exc

    available = tvm.list_models()
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see torchvision.models.list_models()"
        raise ModelLoadError(f"unknown torchvision model {name!r}{hint}")
    for key in _DOWNLOADED:
        if kwargs.get(key) not in (None, "None"):
            raise UsageError(f"torchvision {key} cannot be downloaded here; load a checkpoint with --weights")
    kwargs = {k: v for k, v in kwargs.items() if k not in _DOWNLOADED}
    # a detector's or segmenter's backbone defaults to ImageNet weights: ask for none
    takes = inspect.signature(tvm.get_model_builder(name)).parameters
    none = {key: None for key in _DOWNLOADED if key in takes}
    default_size: tuple[int, ...] = DEFAULT_INPUT_SIZE  # torchvision's classifiers' usual input
    try:
        weights = tvm.get_model_weights(name).DEFAULT  # metadata only: nothing is downloaded
        crop = getattr(weights.transforms, "keywords", {}).get("crop_size")
        if crop:
            default_size = (1, 3, int(crop), int(crop))
    except (ValueError, AttributeError, KeyError):
        pass

    def factory(**kw: Any) -> nn.Module:
        with _no_downloads(spec):
            built: nn.Module = tvm.get_model(name, **none, **kw)
            return built

    module = _call_factory(factory, kwargs, spec, meta)
    native = getattr(module, "image_size", None)  # ViTs are built for one size; the weights may use another
    if isinstance(native, int):
        default_size = (1, 3, native, native)
    return LoadedModel(
        module,
        spec,
        default_size,
        lambda: _call_factory(factory, kwargs, spec, False),
        meta and _all_meta(module),
        True,
    )


def _import_factory(target: str, attr: str, spec: str) -> Callable[..., Any]:
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {target}")
        mod_name = f"_convdoctor_user_{abs(hash(path.resolve()))}"
        mod_spec = importlib.util.spec_from_file_location(mod_name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise ModelLoadError(f"cannot import {target}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.path.insert(0, str(path.resolve().parent))
        try:
            mod_spec.loader.exec_module(module)
        except SystemExit as exc:
            raise _exited(exc, f"importing {target}") from None
        except Exception as exc:
            raise ModelLoadError(f"importing {target} raised {type(exc).__name__}: {exc}") from exc
        finally:
            sys.path.remove(str(path.resolve().parent))
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(target)
        except SystemExit as exc:
            raise _exited(exc, f"importing {target!r}") from None
        except ImportError as exc:
            raise ModelLoadError(f"cannot import module {target!r}: {exc}") from exc
        except Exception as exc:
            raise ModelLoadError(f"importing {target!r} raised {type(exc).__name__}: {exc}") from exc
    if not hasattr(module, attr):
        names = [n for n in dir(module) if not n.startswith("_")]
        close = difflib.get_close_matches(attr, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelLoadError(f"{target!r} has no attribute {attr!r}{hint}")
    return getattr(module, attr)  # type: ignore[no-any-return]


def _load_file(path: Path, spec: str, trusted: bool) -> LoadedModel:
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    if path.suffix == ".pt2":
        program = load_exported(path, trusted=trusted)
        exported: nn.Module = program.module()
        return LoadedModel(
            exported, spec, _example_size(program), lambda: load_exported(path, trusted=trusted).module()
        )
    module = load_torchscript(path, trusted=trusted)
    return LoadedModel(module, spec, None, lambda: load_torchscript(path, trusted=trusted))


def _example_size(program: Any) -> tuple[int, ...] | None:
    try:
        args = program.example_inputs[0]
        if args and isinstance(args[0], torch.Tensor):
            return tuple(int(d) for d in args[0].shape)
    except (AttributeError, TypeError, IndexError):
        pass
    return None


def load_model(spec: str, *, meta: bool = False, trusted: bool = False) -> LoadedModel:
    """Build the module a MODEL spec names.

    Args:
        spec: the MODEL spec (see module docstring).
        meta: build Python models on the meta device (no weights allocated). Files
            (``.pt``/``.pt2``) always load real.
        trusted: load a ``.pt``/``.pt2`` file without vetting it (see
            :mod:`convdoctor.capture.archive`): only for a file you trust. Python specs run
            the code they name whatever this says.

    Returns:
        The loaded model.

    Raises:
        ModelLoadError: unknown name, missing file, failing factory, not a module.
        UsageError: malformed spec.
    """
    spec = spec.strip()
    if not spec:
        raise UsageError(
            "empty MODEL spec: give torchvision:NAME, pkg.module:factory, file.py:factory or a .pt/.pt2 file"
        )
    base, _, query = spec.partition("?")
    kwargs = _parse_kwargs(query, spec)
    if base.startswith("torchvision:"):
        return _torchvision(base.split(":", 1)[1], kwargs, spec, meta)
    if base.endswith((".pt", ".pt2", ".pth", ".ts")) and ":" not in base.replace(":\\", ""):
        return _load_file(Path(base), spec, trusted)
    if ":" not in base:
        raise UsageError(
            f"cannot read MODEL {spec!r}: expected torchvision:NAME, pkg.module:factory, "
            "path/file.py:factory, or a .pt/.pt2 file"
        )
    target, attr = base.rsplit(":", 1)
    factory = _import_factory(target, attr, spec)
    if isinstance(factory, nn.Module):
        return LoadedModel(factory, spec, None, None, False)
    if not callable(factory):
        raise ModelLoadError(f"{spec!r} names a {type(factory).__name__}, not a factory or module")
    module = _call_factory(factory, kwargs, spec, meta)
    on_meta = meta and _all_meta(module)
    return LoadedModel(module, spec, None, lambda: _call_factory(factory, kwargs, spec, False), on_meta, True)


def _all_meta(module: nn.Module) -> bool:
    tensors = list(module.parameters()) + list(module.buffers())
    return bool(tensors) and all(t.device.type == "meta" for t in tensors)


def load_weights(model: LoadedModel, checkpoint: str | os.PathLike[str]) -> LoadedModel:
    """Load a state_dict checkpoint (``weights_only=True``) into the model.

    Accepts a raw state_dict or a dict with a ``state_dict``/``model`` entry. On a meta
    model the tensors are assigned, so no random init is ever computed.

    Raises:
        ModelLoadError: unreadable file, or keys/shapes that do not match.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ModelLoadError(
            f"cannot read checkpoint {path} with weights_only=True: {type(exc).__name__}: {first}"
        ) from exc
    state = obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"checkpoint {path} does not hold a state_dict of tensors")
    module = model.module if not model.on_meta or model.rebuild is None else model.rebuild()
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines() or [""]
        detail = " ".join(line.strip() for line in lines[:3])
        raise ModelLoadError(f"checkpoint {path} does not match the model: {detail}") from exc
    return LoadedModel(module, model.spec, model.default_input_size, None, False, model.fresh)
