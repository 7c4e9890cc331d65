"""The HTML report in a real browser: headless Chromium renders it, every section is there,
every image decodes, and the console stays clean. The screenshot is kept in artifacts/."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from convdoctor.check_api import check
from convdoctor.monitor import report_from_json
from convdoctor.report import Format, render

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = Path(os.environ.get("CONVDOCTOR_ARTIFACTS", ROOT / "artifacts"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: test-only instrumentation: report broken images to the console and mark the DOM when done.
PROBE = """<script>window.addEventListener('load', () => {
  const bad = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0));
  bad.forEach(i => console.error('broken image: ' + i.alt));
  document.body.setAttribute('data-images', document.images.length + ':' + bad.length);
});</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("Chromium is missing in CI: .ci/run should have installed it")
    pytest.skip("headless Chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from convdoctor.demo.training import train_digits

    mon = train_digits(steps=40)
    report = check("tests.fixtures.user_models:tiny", "1x3x32x32", batch_sizes=(1, 4))
    monitor = report_from_json(json.loads(mon.to_json()))
    import dataclasses

    report = dataclasses.replace(report, parts={**report.parts, "monitor": monitor})
    out = tmp_path_factory.mktemp("html") / "report.html"
    out.write_text(render(report, Format.HTML), encoding="utf-8")
    return out


def test_self_contained(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']https?://""", text), "the page must not load anything from the network"
    assert "<script" not in text


@pytest.mark.slow
def test_renders_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    browser = _chromium()
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([browser, *FLAGS, *profile, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                          "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in ("findings", "inspect", "rf", "audit", "bench", "monitor"):
        assert f'id="{section}"' in dom.stdout, f"section {section} missing"
    images = re.search(r'data-images="(\d+):(\d+)"', dom.stdout)
    assert images, "the load handler never ran"
    assert int(images.group(1)) >= 5 and images.group(2) == "0", images.group(0)  # MACs, RF, latency, loss, grads
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "html_report.png"
    subprocess.run([browser, *FLAGS, "--user-data-dir=" + str(tmp_path / "profile2"), "--window-size=1280,4000",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000
