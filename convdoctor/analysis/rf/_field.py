"""The receptive-field state of one tensor value, and the algebra the rules use.

Conventions (Araujo, Norris and Sim, "Computing Receptive Fields of Convolutional
Neural Networks", Distill 2019), per spatial axis of the model's first input:

* A *piece* ``(jump, lo, hi)`` says that unit ``i`` along the axis sees the input pixels
  ``[lo + i*jump, hi + i*jump]``: ``jump`` is the effective stride, ``lo`` the first
  pixel of unit 0's field (minus the effective padding), ``hi - lo + 1`` the size.
  Fields are never clipped to the input.
* A *multi-path* value (residual add, concatenation) holds the hull of its paths. Paths
  with the same jump merge into one piece (the hull is still affine in ``i``); paths
  with different jumps stay separate pieces, so the field of unit ``i`` is the hull of
  every piece at ``i``, exactly. Either kind of disagreement is *misalignment*.
* The *layout* says which tensor dim indexes which axis: per dim, a tuple of factors
  ``(axis, size)`` (``axis == -1`` for batch/channel factors), so views that merge and
  split dims (``(N, H, W, C) -> (N*H*W, C)``) keep track of the axes.
* Paths through a global reduction (a spatial mean, global pooling, normalisation
  statistics) make every unit depend on the whole input; they set ``global_`` and
  contribute no piece, so ``size`` stays the field of the local paths (DESIGN.md).

Numbers are :class:`fractions.Fraction` only where an op makes them fractional
(upsampling); otherwise plain ints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

Num = int | Fraction
Factor = tuple[int, int]  #: ``(axis, size)``; axis -1 is a batch/channel factor
DimLayout = tuple[Factor, ...]
Layout = tuple[DimLayout, ...]

NOT_SPATIAL = -1


@dataclass(frozen=True)
class Piece:
    """Unit ``i`` sees input pixels ``[lo + i*jump, hi + i*jump]`` along one axis."""

    jump: Num
    lo: Num
    hi: Num

    def at(self, i: int) -> tuple[Num, Num]:
        """The field of unit ``i``: first and last input pixel."""
        return self.lo + i * self.jump, self.hi + i * self.jump


Pieces = tuple[Piece, ...]


def merge_pieces(pieces: Iterable[Piece]) -> tuple[Pieces, bool]:
    """Union of paths: pieces with equal jumps become their hull.

    Returns:
        The pieces sorted by jump, and whether the paths were misaligned (different
        jumps, or equal jumps with different field centres).
    """
    by_jump: dict[Num, Piece] = {}
    misaligned = False
    for p in pieces:
        old = by_jump.get(p.jump)
        if old is None:
            by_jump[p.jump] = p
            continue
        if old.lo + old.hi != p.lo + p.hi:
            misaligned = True
        by_jump[p.jump] = Piece(p.jump, min(old.lo, p.lo), max(old.hi, p.hi))
    if len(by_jump) > 1:
        misaligned = True
    return tuple(by_jump[j] for j in sorted(by_jump)), misaligned


def window(pieces: Pieces, first: Num, span: Num, step: Num) -> Pieces:
    """Output unit ``o`` reads input units ``o*step + first + [0, span]`` (an affine window).

    A convolution or pooling with kernel ``k``, stride ``s``, padding ``p`` and dilation
    ``d`` is ``first = -p``, ``span = (k-1)*d``, ``step = s``: the classic recurrence
    ``size' = size + (k-1)*d*jump``, ``jump' = jump*s``, ``start' = start - p*jump``.
    """
    out = []
    for p in pieces:
        reach = span * p.jump
        out.append(Piece(p.jump * step, p.lo + first * p.jump + min(0, reach), p.hi + first * p.jump + max(0, reach)))
    return tuple(out)


def collapse(pieces: Pieces, n: int) -> Pieces:
    """Hull over all ``n`` units of an axis: the field of something that reads them all."""
    out = []
    for p in pieces:
        reach = (n - 1) * p.jump
        out.append(Piece(0, p.lo + min(0, reach), p.hi + max(0, reach)))
    return tuple(out)


def constant(pieces: Pieces) -> Pieces:
    """Every unit sees what unit 0 sees (a size-1 dim broadcast over many units)."""
    return tuple(Piece(0, p.lo, p.hi) for p in pieces)


def hull_at(pieces: Pieces, i: int) -> tuple[Num, Num] | None:
    """First and last input pixel unit ``i`` sees, over every piece (None: no local path)."""
    if not pieces:
        return None
    spans = [p.at(i) for p in pieces]
    return min(s[0] for s in spans), max(s[1] for s in spans)


@dataclass(frozen=True)
class Field:
    """Receptive-field state of one tensor value.

    Attributes:
        layout: per tensor dim, its factors ``(axis, size)``.
        axes: per spatial axis of the input, the pieces (empty: only global paths).
        global_: some path went through a global reduction.
        exact: False when some rule could only give an outer bound.
        misaligned: paths with different jumps or centres were merged.
        whole: some axis was contracted whole (flatten + linear).
        hetero: channels carry different fields (a concatenation of different paths).
        uncounted: why the field is unknown (an op without a rule); None when known.
    """

    layout: Layout
    axes: tuple[Pieces, ...]
    global_: bool = False
    exact: bool = True
    misaligned: bool = False
    whole: bool = False
    hetero: bool = False
    uncounted: str | None = None

    def where(self, axis: int) -> tuple[int, int] | None:
        """``(dim, factor position)`` of an axis in the layout, or None when absent."""
        for d, factors in enumerate(self.layout):
            for k, (a, _) in enumerate(factors):
                if a == axis:
                    return d, k
        return None

    def axis_size(self, axis: int) -> int:
        """Number of units along an axis (1 when absent)."""
        pos = self.where(axis)
        return 1 if pos is None else self.layout[pos[0]][pos[1]][1]

    def with_(self, **changes: object) -> Field:
        """A copy with some attributes replaced."""
        return replace(self, **changes)  # type: ignore[arg-type]


def input_field(shape: Sequence[int]) -> Field:
    """The model input ``(N, C, *spatial)``: unit ``i`` sees pixel ``i``."""
    spatial = len(shape) - 2
    layout: list[DimLayout] = [_plain_dim(shape[0]), _plain_dim(shape[1])]
    layout += [((a, int(shape[2 + a])),) for a in range(spatial)]
    return Field(tuple(layout), tuple((Piece(1, 0, 0),) for _ in range(spatial)))


def uncounted(reason: str, shape: Sequence[int] = ()) -> Field:
    """A value whose field is unknown, with the reason."""
    return Field(tuple(_plain_dim(n) for n in shape), (), uncounted=reason)


def _plain_dim(n: int) -> DimLayout:
    return ((NOT_SPATIAL, int(n)),) if n != 1 else ()


def plain_dim(n: int) -> DimLayout:
    """Layout of a dim that holds no spatial axis."""
    return _plain_dim(n)


def has_axis(dim: DimLayout) -> bool:
    """Whether a dim holds a spatial factor."""
    return any(a != NOT_SPATIAL for a, _ in dim)


def join(fields: Sequence[Field], layout: Layout, axes: Sequence[Iterable[Piece]], *, hetero: bool = False) -> Field:
    """Union of input fields re-expressed on ``axes``; flags combine (``exact`` is an AND)."""
    merged = []
    misaligned = any(f.misaligned for f in fields)
    for pieces in axes:
        ps, mis = merge_pieces(pieces)
        merged.append(ps)
        misaligned = misaligned or mis
    return Field(
        layout=layout,
        axes=tuple(merged),
        global_=any(f.global_ for f in fields),
        exact=all(f.exact for f in fields),
        misaligned=misaligned,
        whole=any(f.whole for f in fields),
        hetero=hetero or any(f.hetero for f in fields),
    )


def make_global(field: Field, layout: Layout) -> Field:
    """A value that depends on the input only through a global reduction (no numbers, so nothing inexact)."""
    return field.with_(
        layout=layout,
        axes=tuple(() for _ in field.axes),
        global_=True,
        exact=True,
        misaligned=False,
        whole=False,
        hetero=False,
    )


def regroup(layout: Layout, new_shape: Sequence[int]) -> tuple[Layout, dict[int, int]] | None:
    """Layout after a view/reshape to ``new_shape``, and the spatial axes it splits.

    Batch/channel factors merge and split freely. A spatial axis of one unit goes to the
    next new dim of size 1 (so ``(N, C, 1, 1) -> (N, g, C/g, 1, 1)`` keeps it); one left
    over at the end is dropped (``(N, C, 1, 1) -> (N, C)``: the axis becomes absent, and
    every unit of later broadcasts sees the same field).

    A spatial axis of ``n`` units split into ``(n/b, b)`` (space-to-depth, window
    partitions) keeps the outer factor as the axis; the inner ``b`` positions become a
    batch/channel factor. Returns ``{axis: b}`` for each such split: the caller widens
    the axis' field to the ``b`` positions each outer unit gathers. A split that the
    outer factor cannot own (a spatial axis inside a bigger new dim) returns None.
    """
    flat: list[Factor] = []
    for f in (f for dim in layout for f in dim if f[1] != 1 or f[0] != NOT_SPATIAL):
        if flat and f[0] == NOT_SPATIAL and flat[-1][0] == NOT_SPATIAL:
            flat[-1] = (NOT_SPATIAL, flat[-1][1] * f[1])  # adjacent batch/channel factors are one
        else:
            flat.append(f)
    out: list[DimLayout] = []
    pending: list[Factor] = []  # one-unit axes met while filling a bigger dim: they wait for a size-1 dim
    splits: dict[int, int] = {}
    k = 0
    for n in (int(v) for v in new_shape):
        dim: list[Factor] = []
        need = n
        if n == 1 and pending:
            dim.append(pending.pop(0))
        elif n == 1 and k < len(flat) and flat[k][1] == 1:
            dim.append(flat[k])
            k += 1
        while need > 1:
            if k >= len(flat):
                return None
            a, size = flat[k]
            if size == 1:
                pending.append(flat[k])
                k += 1
            elif size <= need and need % size == 0:
                dim.append((a, size))
                need //= size
                k += 1
            elif a == NOT_SPATIAL and size % need == 0:
                dim.append((a, need))
                flat[k] = (a, size // need)
                need = 1
            elif size % need == 0 and a not in splits:
                dim.append((a, need))  # outer factor: unit o holds positions o*b .. o*b + b-1
                splits[a] = size // need
                flat[k] = (NOT_SPATIAL, size // need)
                need = 1
            else:
                return None
        out.append(tuple(dim))
    if any(size != 1 for _, size in flat[k:]):
        return None
    return tuple(out), splits
