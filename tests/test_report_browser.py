"""The HTML report in a real browser: Debian's Chromium, headless, with every network
request refused. It loads without errors, decodes every plot, and a screenshot shows them.

Skips where Chromium is not installed, except under CI (``CI`` set: ``make system-deps``
installs it there), where its absence fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import synthetic_study as synthetic
from PIL import Image

from dwsearch.report import ReportPaths, make_report
from dwsearch.study.results import load_results


def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                        else None)
    if path is None:
        message = "Chromium not found (Debian: apt-get install chromium; make system-deps)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def browse(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Chromium, headless, on a file URL; the host resolver maps every name to nothing, so a
    page that needed the network would show errors."""
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",
         f"--user-data-dir={profile}", *extra, page.as_uri()],
        capture_output=True, text=True, timeout=180)


# Appended to a copy of the page only (the report itself has no JavaScript): records load
# errors of any element, and after loading writes how many images decoded.
PROBE = """<script>
var problems = [];
window.addEventListener("error", function (e) {
  var t = e.target || {};
  problems.push(e.message || ("could not load " + (t.tagName || "?") + " " +
                String(t.src || t.href || "").slice(0, 60)));
}, true);
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    images: images.length,
    decoded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    sizes: images.map(function (i) { return [i.naturalWidth, i.naturalHeight]; }),
    sections: Array.prototype.map.call(document.querySelectorAll("section"),
                                       function (s) { return s.id; }),
    resources: performance.getEntriesByType("resource").map(function (r) { return r.name; }),
    problems: problems
  });
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ReportPaths]:
    root = tmp_path_factory.mktemp("browser")
    out = {}
    for kind, build in (("baseline", synthetic.baseline_study),
                        ("ablation", synthetic.ablation_study)):
        url = f"sqlite:///{root / kind}.db"
        name = build(url)
        out[kind] = make_report(load_results(name, url), root / name)
    return out


@pytest.mark.parametrize("kind", ["baseline", "ablation"])
def test_page_loads_and_decodes_every_plot(reports: dict[str, ReportPaths], kind: str,
                                           tmp_path: Path) -> None:
    paths = reports[kind]
    page = tmp_path / "probed.html"
    page.write_text(paths.html.read_text().replace("<head>", "<head>\n" + PROBE, 1))
    proc = browse(page, tmp_path / "profile", "--virtual-time-budget=15000", "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stdout[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["problems"] == []
    assert probe["resources"] == []  # nothing fetched: images are data URIs, CSS inline
    assert probe["images"] == len(paths.images) >= 9
    assert probe["decoded"] == probe["images"]
    assert all(w >= 600 and h >= 200 for w, h in probe["sizes"])
    for section in ("summary", "fronts", "configurations", "curves", "costs", "speed",
                    "architectures", "excluded"):
        assert section in probe["sections"]
    assert ("claims" in probe["sections"]) == (kind == "baseline")
    assert ("ablation" in probe["sections"]) == (kind == "ablation")


def test_screenshot_shows_the_plots(reports: dict[str, ReportPaths], tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    proc = browse(reports["baseline"].html, tmp_path / "profile",
                  f"--screenshot={shot}", "--window-size=1400,3000",
                  "--virtual-time-budget=15000", "--hide-scrollbars")
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = os.environ.get("DWSEARCH_SCREENSHOT_DIR")
    if kept:
        Path(kept).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(kept) / "report-baseline.png")
    print(f"screenshot: {shot}")
    with Image.open(shot) as image:
        assert image.size == (1400, 3000)
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert pixels.std() > 20  # not a blank page
    # The Pareto front's red (#d62728) is on screen: the plots were drawn, not just laid out.
    red = np.abs(pixels - np.array([0xD6, 0x27, 0x28])).sum(axis=2) < 40
    assert red.sum() > 50
