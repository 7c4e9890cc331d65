"""The HTML report in a real browser: headless Chromium renders it, every section is there,
every image decodes, and the console stays clean. The screenshot is kept in artifacts/."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from convdoctor.check import check
from convdoctor.monitor import report_from_json
from convdoctor.report import Format, render

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = Path(os.environ.get("CONVDOCTOR_ARTIFACTS", ROOT / "artifacts"))
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
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
def report():  # noqa: ANN201
    """One check report (with a monitor part) behind both the page and its JSON document."""
    import dataclasses

    from convdoctor.demo.training import train_digits

    mon = train_digits(steps=40)
    report = check("tests.fixtures.user_models:tiny", "1x3x32x32", batch_sizes=(1, 4))
    monitor = report_from_json(json.loads(mon.to_json()))
    return dataclasses.replace(report, parts={**report.parts, "monitor": monitor})


@pytest.fixture(scope="module")
def page(report, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
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
    dom = subprocess.run(
        [
            browser,
            *FLAGS,
            *profile,
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
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
    subprocess.run(
        [
            browser,
            *FLAGS,
            "--user-data-dir=" + str(tmp_path / "profile2"),
            "--window-size=1280,4000",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000


class _Page(HTMLParser):
    """Tables (header, rows) per section id, finding codes and headings, from the rendered page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[list[str], list[list[str]]]]] = {}
        self.codes: list[str] = []
        self.headings: list[str] = []
        self._section = ""
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._finding_depth = 0
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self._tag = tag
        if tag == "section":
            self._section = a.get("id") or ""
        elif tag == "table":
            self.tables.setdefault(self._section, []).append(([], []))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "div" and "finding" in (a.get("class") or "").split():
            self._finding_depth = 1
        elif tag == "div" and self._finding_depth:
            self._finding_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            header, rows = self.tables[self._section][-1]
            (rows.append if header else header.extend)(self._row)
            self._row = None
        elif tag == "div" and self._finding_depth:
            self._finding_depth -= 1
        self._tag = ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        elif self._tag == "b" and self._finding_depth == 1 and self._section == "findings":
            self.codes.append(data.strip())
        elif self._tag == "h2":
            self.headings.append(data.strip())


@pytest.fixture(scope="module")
def shown(page: Path) -> _Page:
    parsed = _Page()
    parsed.feed(page.read_text(encoding="utf-8"))
    return parsed


@pytest.fixture(scope="module")
def doc(report) -> dict:  # noqa: ANN001
    """The JSON document of the same report: the page's numbers must be these."""
    return json.loads(render(report, Format.JSON))


def _bytes(text: str) -> float:
    number, unit = text.split()
    return float(number) * {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]


def _int(text: str) -> int:
    return int(text.split()[0].replace(",", ""))


def _axes(values: list) -> str:  # noqa: ANN001
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


def test_findings_on_the_page_are_the_documents(shown: _Page, doc: dict) -> None:
    codes = [f["code"] for f in doc["findings"]]
    assert codes and shown.codes == codes
    assert f"Findings ({len(codes)})" in shown.headings


def test_inspect_totals_and_layers_equal_the_json(shown: _Page, doc: dict) -> None:
    totals = doc["inspect"]["totals"]
    facts = dict(shown.tables["inspect"][0][1])
    assert _int(facts["parameters"]) == totals["params"]
    assert facts["parameters"].endswith(f"({totals['trainable_params']:,} trainable)")
    assert _int(facts["MACs"]) == totals["macs"]
    assert _int(facts["other FLOPs"]) == totals["other_flops"]
    # bytes are shown with three significant figures: equal to that rounding
    assert _bytes(facts["peak live activations"]) == pytest.approx(totals["peak_activation_bytes"], rel=5e-3)
    assert _bytes(facts["parameter memory"]) == pytest.approx(totals["param_bytes"], rel=5e-3)
    header, layers = shown.tables["inspect"][-1]
    col = {name: i for i, name in enumerate(header)}
    rows = {r["name"]: r for r in doc["inspect"]["layers"]}
    assert layers
    for cells in layers:
        row = rows[cells[0]]
        assert _int(cells[col["params"]]) == row["params"] and _int(cells[col["MACs"]]) == row["macs"], cells
        assert cells[col["output"]] == "x".join(map(str, row["output_shape"]))
        assert _bytes(cells[col["act. mem"]]) == pytest.approx(row["activation_bytes"], rel=5e-3)


def test_rf_fields_equal_the_json(shown: _Page, doc: dict) -> None:
    rf = doc["rf"]
    rows = {r["name"]: r for r in rf["layers"]}
    facts = dict(shown.tables["rf"][0][1])
    focus = rows[rf["layer"]]
    assert facts["focus layer"].split()[0] == (rf["layer"] or "<model>")
    assert facts["field size (px)"] == _axes(focus["size"])
    assert facts["jump"] == _axes(focus["jump"]) and facts["start"] == _axes(focus["start"])
    header, layers = shown.tables["rf"][-1]
    col = {name: i for i, name in enumerate(header)}
    assert layers
    for cells in layers:
        row = rows["" if cells[0] == "<model>" else cells[0]]
        if cells[col["size"]] == "global":
            assert row["global"] and None in row["size"]
            continue
        assert cells[col["size"]] == _axes(row["size"]) and cells[col["jump"]] == _axes(row["jump"])
        assert cells[col["start"]] == _axes(row["start"])


def test_audit_check_statuses_equal_the_json(shown: _Page, doc: dict) -> None:
    header, rows = shown.tables["audit"][0]
    assert header[:2] == ["check", "status"]
    assert [(r[0], r[1]) for r in rows] == [(c["name"], c["status"]) for c in doc["audit"]["checks"]]


def test_bench_latency_figures_equal_the_json(shown: _Page, doc: dict) -> None:
    header, rows = shown.tables["bench"][0]
    col = {name: i for i, name in enumerate(header)}
    results = doc["bench"]["results"]
    assert [int(r[col["batch"]]) for r in rows] == [r["batch_size"] for r in results] == [1, 4]
    for cells, res in zip(rows, results):
        assert int(cells[col["threads"]]) == res["threads"]
        for name, key in (("p50 ms", "p50_ms"), ("p90 ms", "p90_ms"), ("p99 ms", "p99_ms")):
            assert cells[col[name]] == f"{res[key]:.2f}", (name, cells[col[name]], res[key])
        assert float(cells[col["samples/s"]]) == pytest.approx(res["throughput"], abs=0.05)
