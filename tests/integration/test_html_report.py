"""The HTML report in a real browser (headless Debian chromium): every figure is in the DOM and is drawn.

The render check needs no JavaScript: the page shows each PNG at its natural size, and Chromium runs with a
device scale factor of 1 and an sRGB colour profile, so a decoded image appears in the screenshot pixel for
pixel. The test finds every plot's pixels in the screenshot; a broken or undecodable image leaves an empty
box or a broken-image icon there instead, which the second test proves by corrupting one image on purpose.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from neuronkit.html_report import write_html_report
from tests.unit.test_html_report import build_plots, start_tags, synthetic_report

pytestmark = pytest.mark.browser

EXPECTED_FIGURES = {
    "variant_scores": "Harmful score and over-refusal per variant",
    "restore_curve": "Restore ratio R(k): safety versus random neurons",
    "neurons_per_layer": "Safety neurons per layer",
    "nlsr": "NLSR: harmful fine-tuning and realignment",
    "overlap_heatmap": "Overlap between neuron sets",
}
WINDOW = (1200, 4000)  # tall enough that every synthetic figure is inside the screenshot
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                  "--force-device-scale-factor=1", "--force-color-profile=srgb",
                  "--run-all-compositor-stages-before-draw", "--virtual-time-budget=5000",
                  f"--window-size={WINDOW[0]},{WINDOW[1]}")
APT_INSTALL = ("apt-get", "install", "-y", "--no-install-recommends", "chromium")


def apt_get(*args: str) -> subprocess.CompletedProcess:
    """apt-get without prompts; a hung mirror ends in a skip, not a stuck test run."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip(f"`{' '.join(args)}` took more than 900 s")


def install_chromium() -> float:
    """Install Debian's chromium (refreshing the package lists once if needed); the seconds it took."""
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed, and installing it with apt-get needs root")
    if shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and there is no apt-get to install it")
    start = time.monotonic()
    result = apt_get(*APT_INSTALL)
    if result.returncode != 0:  # stale or empty package lists: refresh once, then retry
        apt_get("apt-get", "update")
        result = apt_get(*APT_INSTALL)
    if result.returncode != 0:
        pytest.skip(f"apt-get could not install chromium: {result.stderr.strip()[-500:]}")
    return time.monotonic() - start


@pytest.fixture(scope="module")
def chromium() -> tuple[str, float | None]:
    """The chromium binary, and the install time when this run had to install it."""
    seconds = None if shutil.which("chromium") else install_chromium()
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("apt-get reported success but no `chromium` is on PATH")
    return binary, seconds


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """Where the page and its screenshots are kept: $NEURONKIT_ARTIFACTS when set."""
    folder = os.environ.get("NEURONKIT_ARTIFACTS")
    out = Path(folder) if folder else tmp_path_factory.mktemp("artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory, artifacts) -> tuple[Path, dict[str, Path]]:
    """The HTML report of the synthetic report, and its plots."""
    report = synthetic_report()
    plots = build_plots(report, tmp_path_factory.mktemp("plots"))
    page = artifacts / "report.html"
    write_html_report(report, plots, page)
    return page, plots


def run_chromium(binary: str, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """One headless chromium run on a local file, with its own throw-away profile."""
    cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within 120 s: {' '.join(cmd)}")


def screenshot(binary: str, page: Path, out_png: Path, profile: Path) -> np.ndarray:
    """The page as chromium draws it, as an RGB uint8 array."""
    result = run_chromium(binary, page, profile, f"--screenshot={out_png}")
    assert out_png.is_file(), f"chromium wrote no screenshot (rc {result.returncode}): {result.stderr[-2000:]}"
    return rgb(out_png)


def rgb(png: Path) -> np.ndarray:
    """A PNG as an RGB uint8 array (matplotlib reads PNGs as floats in [0, 1])."""
    import matplotlib.image

    pixels = matplotlib.image.imread(png)[..., :3]
    return np.round(pixels * 255).astype(np.uint8)


def anchor_row(plot: np.ndarray) -> int:
    """The plot's most varied row: unlikely to occur anywhere else in the page."""
    packed = plot.astype(np.uint32) @ np.array([65536, 256, 1], dtype=np.uint32)
    return int(np.argmax([len(np.unique(row)) for row in packed]))


def locate(screen: np.ndarray, plot: np.ndarray) -> tuple[int, int] | None:
    """Top-left corner where the plot is drawn in the screenshot, pixel for pixel; None if it is not."""
    row = anchor_row(plot)
    needle, (height, width) = plot[row].tobytes(), plot.shape[:2]
    for y in range(row, screen.shape[0] - height + row + 1):
        line = screen[y].tobytes()
        at = line.find(needle)
        while at != -1 and at % 3:
            at = line.find(needle, at + 1)
        if at == -1:
            continue
        block = screen[y - row:y - row + height, at // 3:at // 3 + width].astype(int)
        if block.shape == plot.shape and np.abs(block - plot).mean() < 1.0:
            return at // 3, y - row
    return None


def show(capsys, message: str) -> None:
    """A line on the terminal even under -q, so the artifact paths are always in the output."""
    with capsys.disabled():
        print(f"\n[browser] {message}")


def test_dom_holds_every_figure_as_an_embedded_png(chromium, built, tmp_path):
    binary, _ = chromium
    page, plots = built
    result = run_chromium(binary, page, tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0 and "<figure" in result.stdout, result.stderr[-2000:]
    tags = start_tags(result.stdout)
    images = {attrs.get("id"): attrs for tag, attrs in tags if tag == "img"}
    for name, alt in EXPECTED_FIGURES.items():
        img = images.get(f"plot-{name}")
        assert img is not None, f"no <img id=plot-{name}> in the DOM chromium built from {page}"
        assert img.get("alt") == alt
        data = img["src"].removeprefix("data:image/png;base64,")
        assert base64.b64decode(data) == plots[name].read_bytes(), f"{name}: embedded bytes differ from the plot"
    assert not [t for t, _ in tags if t in ("script", "link", "iframe")]
    assert "Safety-neuron report: tiny" in result.stdout


def test_screenshot_shows_every_figure(chromium, built, artifacts, tmp_path, capsys):
    binary, install_seconds = chromium
    page, plots = built
    shot_png = artifacts / "report_screenshot.png"
    screen = screenshot(binary, page, shot_png, tmp_path / "profile")
    where = {name: locate(screen, rgb(plots[name])) for name in EXPECTED_FIGURES}
    installed = f" (chromium installed by this run in {install_seconds:.1f} s)" if install_seconds else ""
    show(capsys, f"screenshot of the HTML report: {shot_png}{installed}")
    missing = [name for name, at in where.items() if at is None]
    assert not missing, f"not drawn in the screenshot: {missing}; see {shot_png}"
    tops = [where[name][1] for name in EXPECTED_FIGURES]
    assert tops == sorted(tops), f"figures out of reading order: {where}"


def test_a_broken_image_is_caught_by_the_render_check(chromium, built, artifacts, tmp_path, capsys):
    binary, _ = chromium
    page, plots = built
    good = base64.b64encode(plots["restore_curve"].read_bytes()).decode("ascii")
    corrupt = base64.b64encode(plots["restore_curve"].read_bytes()[:64] + bytes(256)).decode("ascii")
    assert good in page.read_text(encoding="utf-8")
    broken_page = tmp_path / "broken.html"
    broken_page.write_text(page.read_text(encoding="utf-8").replace(good, corrupt), encoding="utf-8")
    shot_png = artifacts / "report_screenshot_broken_image.png"
    screen = screenshot(binary, broken_page, shot_png, tmp_path / "profile")
    show(capsys, f"screenshot with a corrupted restore-curve image: {shot_png}")
    assert locate(screen, rgb(plots["restore_curve"])) is None, "a corrupted image still passed the render check"
    assert locate(screen, rgb(plots["variant_scores"])) is not None
