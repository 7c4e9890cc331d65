"""Rule tables keyed by aten overload packet.

``RuleTable.register(aten.convolution, ...)`` is a decorator that rejects anything that
is not an ``OpOverloadPacket`` and any packet registered twice, so each table has one
source of truth. Rules are looked up by the packet's string name, which is what the
graph records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from torch._ops import OpOverloadPacket

R = TypeVar("R", bound=Callable[..., object])


class RuleTable(Generic[R]):
    """A named mapping from op packet name to rule.

    Args:
        name: table name, used in error messages.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._rules: dict[str, R] = {}

    def register(self, *packets: OpOverloadPacket) -> Callable[[R], R]:
        """Decorator: register the rule for each packet.

        Raises:
            TypeError: a target is not an ``OpOverloadPacket``.
            ValueError: a packet already has a rule in this table.
        """
        for p in packets:
            if not isinstance(p, OpOverloadPacket):
                raise TypeError(f"{self.name}: rule target {p!r} is not an aten OpOverloadPacket")

        def deco(fn: R) -> R:
            for p in packets:
                key = str(p)
                if key in self._rules:
                    raise ValueError(f"{self.name}: {key} registered twice")
                self._rules[key] = fn
            return fn

        return deco

    def add(self, packet: OpOverloadPacket, rule: R) -> None:
        """Register one rule without a decorator (same checks)."""
        self.register(packet)(rule)

    def get(self, packet: str) -> R | None:
        """The rule for a packet name, or None."""
        return self._rules.get(packet)

    def __contains__(self, packet: object) -> bool:
        return str(packet) in self._rules

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def merged(self, extra: dict[OpOverloadPacket, R] | None) -> dict[str, R]:
        """A plain dict of this table plus user ``extra_rules`` (extra wins; validated)."""
        out = dict(self._rules)
        for p, fn in (extra or {}).items():
            if not isinstance(p, OpOverloadPacket):
                raise TypeError(f"extra rule target {p!r} is not an aten OpOverloadPacket")
            out[str(p)] = fn
        return out
