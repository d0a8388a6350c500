"""report.html and compare.html in a real browser: headless Chromium loads each page without a
console message, decodes every embedded plot, shows the headline sentence and every model row,
does not overflow a phone-width screen, and leaves a 390 px wide screenshot as a test artifact
(under pytest's tmp path, and in $SLMKIT_TEST_ARTIFACTS when set).

Slow lane (`make test-all`); skipped where Chromium is not installed (Debian: apt-get install -y chromium).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from slmkit.benchmark.compare import write_compare
from slmkit.benchmark.report import headline_text, write_report
from tests.unit.test_benchmark_report import quickstart_results, scoring_results, teacher_cannot_results

pytestmark = pytest.mark.slow

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]
PHONE = "390,1200"
# appended to a copy of the page (the report itself has no scripts): once loaded, record each image's
# decoded width and whether the page is wider than the window
PROBE = ("<script>window.addEventListener('load', () => {const b = document.body;"
         "b.dataset.images = [...document.images].map(i => i.complete ? i.naturalWidth : 0).join(',');"
         "b.dataset.overflow = document.documentElement.scrollWidth > window.innerWidth ? 'yes' : 'no';});"
         "</script>")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and Path("/usr/bin/chromium").exists():
        found = "/usr/bin/chromium"
    if found is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium)")
    return found


def run_chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def console_messages(stderr: str) -> list[str]:
    """Every console message Chromium logged: the pages have no scripts, so any is a fault."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


class _Page(HTMLParser):
    """The visible text, the table rows (cell texts) and the body's attributes of a dumped DOM."""

    def __init__(self):
        super().__init__()
        self.text, self.rows, self.body, self._row, self._cell, self._skip = [], [], {}, None, None, 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "body":
            self.body = dict(attrs)
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        elif tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._skip:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def visible_text(self) -> str:
        return " ".join("".join(self.text).split())


def load(page: Path, tmp_path: Path) -> tuple[_Page, list[str]]:
    """Open a probed copy of ``page`` at phone width; its parsed DOM and the console messages."""
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    done = run_chromium(probed.as_uri(), tmp_path / "profile", f"--window-size={PHONE}",
                        "--virtual-time-budget=5000", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = _Page()
    dom.feed(done.stdout)
    return dom, console_messages(done.stderr)


def screenshot(page: Path, tmp_path: Path, name: str) -> Path:
    """A phone-width screenshot under tmp_path, copied to $SLMKIT_TEST_ARTIFACTS when set."""
    from PIL import Image

    shot = tmp_path / f"{name}-phone.png"
    done = run_chromium(page.as_uri(), tmp_path / "profile", f"--window-size={PHONE}", f"--screenshot={shot}")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as img:
        assert img.width == 390 and len(img.convert("RGB").getcolors(1 << 20) or [None] * 1000) > 50  # not blank
    keep = os.environ.get("SLMKIT_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    print(f"phone-width screenshot of {page.name}: {shot}" + (f" (kept in {keep})" if keep else ""))
    return shot


def _first_cells(dom: _Page) -> list[str]:
    return [row[0] for row in dom.rows if row]


def test_the_console_check_sees_a_console_error(tmp_path):
    """The harness itself: a page that logs is caught (else the checks below could never fail)."""
    page = tmp_path / "noisy.html"
    page.write_text("<!doctype html><body><script>console.error('boom')</script></body>")
    _, messages = load(page, tmp_path)
    assert any("boom" in m for m in messages)


@pytest.mark.parametrize("case", ["quickstart", "teacher_cannot", "scoring"])
def test_report_renders_in_a_browser_at_phone_width(case, tmp_path):
    r = {"quickstart": quickstart_results, "teacher_cannot": teacher_cannot_results, "scoring": scoring_results}[case]()
    page = write_report(r, tmp_path / "report")
    dom, messages = load(page, tmp_path)
    assert messages == []
    widths = dom.body["data-images"].split(",")
    assert len(widths) == page.read_text().count("data:image/png;base64,") >= 2 and all(int(w) > 0 for w in widths)
    assert dom.body["data-overflow"] == "no"  # wide tables scroll inside their boxes, the page does not
    text = dom.visible_text()
    for line in headline_text(r).replace("WARNING: ", "Warning: ").splitlines():
        assert line in text
    quality_rows = [c.removesuffix(" (final)") for c in _first_cells(dom)]
    for m in r["models"]:
        assert quality_rows.count(m["id"]) >= len(m["variants"]), m["id"]  # a quality row per variant
    rows = [{c.removesuffix(" (final)") for c in row} for row in dom.rows]
    for e in r.get("speed") or r.get("scoring_speed"):  # a speed row per (model, runtime), skipped ones too
        assert any({e["model"], e["backend"]} <= row for row in rows), (e["model"], e["backend"])
    if case == "quickstart":
        assert text.count("pip install 'slmkit[llamacpp]'") == 1 and "✘ FAIL" in text and "✔ pass" in text
    screenshot(page, tmp_path, case)


def test_compare_page_renders_in_a_browser(tmp_path):
    a, b = quickstart_results(), quickstart_results()
    b["speed"][4]["batches"][0]["decode_tok_s"].update(median=120.0, min=118.0, max=122.0)
    write_report(a, tmp_path / "a")
    write_report(b, tmp_path / "b")
    page = write_compare(tmp_path / "a", tmp_path / "b", tmp_path / "compare.html")
    dom, messages = load(page, tmp_path)
    assert messages == [] and dom.body["data-overflow"] == "no"
    moved = [row for row in dom.rows if row and "larger than noise" in row[-1]]
    assert [row[0] for row in moved] == ["export/v1 onnxruntime_genai b1 decode tok/s"] * 2  # summary + full table
    assert re.search(r"1 of \d+ figures that can be told apart differ", dom.visible_text())
    screenshot(page, tmp_path, "compare")
