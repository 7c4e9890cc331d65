"""Rendered inspect output: golden file, and the column sums equal the totals."""

from __future__ import annotations

import json
from collections.abc import Callable

from convdoctor.inspect import inspect
from convdoctor.report import Format, render
from tests.fixtures import models as Z


def test_terminal_golden(golden: Callable[[str, str], None]) -> None:
    report = inspect(Z.BiasBeforeBN().eval(), (1, 3, 8, 8))
    golden("inspect_bias_before_bn.txt", render(report, Format.TERMINAL, width=110, depth=2))


def test_depth_one_rows_sum_to_totals() -> None:
    report = inspect(Z.CatAddInterp(), (1, 4, 8, 8))
    top = [r for r in report.layers if r.depth == 1]
    root = report.layers[0]
    # every op of this model runs inside a child or the root itself; children + root-own = total
    root_own_macs = root.macs - sum(r.macs for r in top)
    assert root_own_macs == 0  # the root only concatenates, adds and interpolates
    assert sum(r.params for r in top) == report.totals["params"]


def test_json_round_trips_and_is_the_to_dict() -> None:
    report = inspect(Z.BiasBeforeBN().eval(), (1, 3, 8, 8))
    assert json.loads(render(report, Format.JSON)) == json.loads(json.dumps(report.to_dict()))
