"""Rendered rf output: golden terminal file, and the table agrees with the JSON document."""

from __future__ import annotations

import json
from collections.abc import Callable

from torch import nn

from convdoctor.report import Format, render
from convdoctor.rf import receptive_field


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(8, 8, (3, 5), padding=(1, 2)), nn.Upsample(scale_factor=2)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


def test_terminal_golden(golden: Callable[[str, str], None]) -> None:
    report = receptive_field(_model(), (1, 3, 16, 16), object_size=3)
    golden("rf_small.txt", render(report, Format.TERMINAL, width=110, depth=2))


def test_table_rows_agree_with_the_json_document() -> None:
    report = receptive_field(_model(), (1, 3, 16, 16))
    text = render(report, Format.TERMINAL, width=150, depth=3)
    doc = json.loads(render(report, Format.JSON))
    for row in doc["layers"]:
        if row["size"][0] is not None and row["name"]:
            size = "x".join(str(s) for s in row["size"]) if row["size"][0] != row["size"][1] else str(row["size"][0])
            cells = next(
                cells
                for cells in (line.split("│") for line in text.splitlines())
                if len(cells) > 4 and cells[1].strip() == row["name"]
            )
            assert cells[4].strip() == size, (row["name"], cells)
