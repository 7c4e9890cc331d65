"""``convdoctor demo``: the whole story runs end to end and writes its report."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from convdoctor.cli import main


@pytest.mark.slow
def test_demo_tells_the_whole_story(tmp_path: Path) -> None:
    html = tmp_path / "demo.html"
    result = CliRunner().invoke(main, ["demo", "--html", str(html)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for needle in ("1. Design", "2. Training", "3. Hand-off", "4. INT8", "5. Serving",
                   "BN_TRAIN_MODE", "BATCH_DEPENDENT_OUTPUT", "DEAD_RELU", "healthy"):
        assert needle in out, needle
    assert f"written to {html.resolve()}" in out
    page = html.read_text(encoding="utf-8")
    for section in ("inspect", "rf", "audit", "bench", "training: healthy (lr 0.05)"):
        assert f'id="{section}"' in page, section
