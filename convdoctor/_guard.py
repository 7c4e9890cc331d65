"""Run a user's model without changing it.

``preserve_model_state`` snapshots every module's attributes (its ``__dict__``: the
``training`` flag, the hook and parameter dicts, and every plain attribute such as a
detection head's cached anchors), the thread count, grad mode and a hash of the
state_dict. On exit, even after an exception, it puts every attribute back: attributes
the run added are deleted, rebound ones get their old object back, containers (dicts,
lists, sets) get their old contents, and plain tensors written in place get their old
values. With ``verify=True`` it raises if the state_dict (or an attribute it could not
restore) changed anyway: a check that mutates a model is a convdoctor bug, and we would
rather fail loudly than ship it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ._compat import tensor_version

#: Plain tensor attributes up to this size are copied before a run so that an in-place
#: write (``self.count += 1``) can be undone; larger ones are only watched (their version
#: counter), which ``verify=True`` turns into an error rather than a silent change.
RESTORE_LIMIT_BYTES = 64 * 2**20

#: How deep nested containers of attributes are followed (a dict of lists of tensors is 3).
_MAX_DEPTH = 4

#: Containers holding the model's weights: the state_dict digest checks those, and an
#: in-place update of a weight is not an attribute change.
_WEIGHT_DICTS = ("_parameters", "_buffers")


def state_dict_digest(model: nn.Module) -> str:
    """SHA-256 over every state_dict entry's name, dtype, shape and bytes.

    Meta tensors have no bytes; only their metadata is hashed.
    """
    h = hashlib.sha256()
    for name, t in model.state_dict(keep_vars=True).items():
        if not isinstance(t, torch.Tensor):
            h.update(f"{name}={t!r}".encode())
            continue
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:{t.device.type}".encode())
        if t.device.type == "meta" or t.numel() == 0:
            continue
        data = t.detach()
        if data.device.type != "cpu":
            data = data.cpu()
        # the array's buffer itself, not a bytes copy (ndarray is a buffer; its stubs do not say so)
        h.update(data.contiguous().reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]
    return h.hexdigest()


def training_flags(model: nn.Module) -> dict[str, bool]:
    """Every module's ``training`` flag, keyed by module path."""
    return {name: m.training for name, m in model.named_modules(remove_duplicate=False)}


class ModelChangedError(RuntimeError):
    """A convdoctor check changed the user's model (a bug in convdoctor)."""


class _Tensor:
    """A plain tensor attribute: its version counter and, when small, a copy of its values."""

    def __init__(self, t: torch.Tensor, keep: bool) -> None:
        self.tensor = t
        self.version = tensor_version(t)
        small = t.device.type != "meta" and t.numel() * t.element_size() <= RESTORE_LIMIT_BYTES
        self.saved = t.detach().clone() if keep and small and self.version is not None else None

    def changed(self) -> bool:
        return self.version is not None and tensor_version(self.tensor) != self.version

    def restore(self) -> bool:
        """Put the old values back; False when they were not kept."""
        if not self.changed():
            return True
        if self.saved is None:
            return False
        with torch.no_grad():
            self.tensor.copy_(self.saved)
        self.version = tensor_version(self.tensor)
        return True


class AttributeSnapshot:
    """Every module's ``__dict__`` as it stands, to compare against and restore.

    What it covers: each entry's binding (identity), the contents of the dicts, lists and
    sets reachable from it (identity of each item, followed ``_MAX_DEPTH`` deep), and the
    values of the plain tensors among them (parameters and buffers are the state_dict's).
    What it cannot cover: state outside ``__dict__`` (a TorchScript module's C++
    attributes, module-level globals) and objects of other classes mutated in place.
    """

    def __init__(self, model: nn.Module, *, values: bool = True) -> None:
        """Take the snapshot.

        Args:
            model: the module tree.
            values: copy small plain tensors so :meth:`restore` can undo in-place writes
                (without it, such writes are only detected).
        """
        self.values = values
        self.modules = [(path, m) for path, m in model.named_modules()]
        self.bindings = [dict(vars(m)) for _, m in self.modules]
        self.containers: list[tuple[str, Any, Any]] = []
        self.tensors: list[tuple[str, _Tensor]] = []
        # weights referenced from a plain attribute are still weights: the digest checks them
        seen: set[int] = {id(t) for t in itertools.chain(model.parameters(), model.buffers())}
        for (path, _), attrs in zip(self.modules, self.bindings):
            for key, value in attrs.items():
                self._walk(f"{path}.{key}" if path else key, value, seen, 0, key in _WEIGHT_DICTS)

    def _walk(self, where: str, value: Any, seen: set[int], depth: int, weights: bool) -> None:
        if id(value) in seen or depth > _MAX_DEPTH:
            return
        if isinstance(value, torch.Tensor):
            if not weights:
                seen.add(id(value))
                self.tensors.append((where, _Tensor(value, self.values)))
            return
        if isinstance(value, dict):
            items: list[Any] = list(value.values())
            saved: Any = dict(value)
        elif isinstance(value, list):
            items, saved = list(value), list(value)
        elif isinstance(value, set):
            items, saved = [], set(value)
        elif isinstance(value, tuple):
            items, saved = list(value), None
        else:
            return
        seen.add(id(value))
        if saved is not None:
            self.containers.append((where, value, saved))
        for item in items:
            if not isinstance(item, nn.Module):
                self._walk(where, item, seen, depth + 1, weights)

    def changes(self) -> list[str]:
        """Where the model differs from the snapshot (``path.attr``), first difference per place."""
        found: list[str] = []
        for (path, m), attrs in zip(self.modules, self.bindings):
            now = vars(m)
            for key in attrs.keys() | now.keys():
                if key not in now or key not in attrs or now[key] is not attrs[key]:
                    found.append(f"{path}.{key}" if path else key)
        for where, container, saved in self.containers:
            if _contents_differ(container, saved):
                found.append(where)
        found.extend(where for where, t in self.tensors if t.changed())
        return sorted(set(found))

    def restore(self) -> list[str]:
        """Put every binding, container and small tensor back; returns what could not be."""
        for (_, m), attrs in zip(self.modules, self.bindings):
            now = vars(m)
            for key in [k for k in now if k not in attrs]:
                del now[key]
            for key, value in attrs.items():
                if now.get(key, _MISSING) is not value:
                    now[key] = value
        for _, container, saved in self.containers:
            if not _contents_differ(container, saved):
                continue
            container.clear()
            if isinstance(container, list):
                container.extend(saved)
            else:
                container.update(saved)
        return [where for where, t in self.tensors if not t.restore()]


_MISSING = object()


def _contents_differ(container: Any, saved: Any) -> bool:
    if isinstance(container, dict):
        return container.keys() != saved.keys() or any(container[k] is not v for k, v in saved.items())
    if isinstance(container, list):
        return len(container) != len(saved) or any(a is not b for a, b in zip(container, saved))
    return bool(container != saved)


@contextlib.contextmanager
def preserve_model_state(model: nn.Module, *, verify: bool = False) -> Iterator[None]:
    """Restore every module's attributes, the thread count and grad mode on exit, even after an exception.

    Attributes include each module's ``training`` flag and hooks (see
    :class:`AttributeSnapshot`), so a model that caches tensors in attributes during a
    run (anchors, grids, masks) is handed back exactly as it came in.

    Args:
        model: the user's module.
        verify: also hash the state_dict before and after and raise
            :class:`ModelChangedError` if it differs, or if an attribute could not be
            restored (costs one pass over the weights).
    """
    attributes = AttributeSnapshot(model)
    # a TorchScript module keeps ``training`` in C++, outside ``__dict__``: restored by name too
    flags = [(m, m.training) for m in model.modules()]
    threads = torch.get_num_threads()
    grad_enabled = torch.is_grad_enabled()
    before = state_dict_digest(model) if verify else None
    try:
        yield
    finally:
        lost = attributes.restore()
        for m, flag in flags:
            if m.training is not flag:
                m.training = flag
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.set_grad_enabled(grad_enabled)
    if verify:
        if state_dict_digest(model) != before:
            raise ModelChangedError("convdoctor changed the model's state_dict; please report this bug")
        lost += attributes.changes()
        if lost:
            raise ModelChangedError(
                f"convdoctor changed the model's attributes ({', '.join(sorted(set(lost))[:5])}); "
                "please report this bug"
            )
