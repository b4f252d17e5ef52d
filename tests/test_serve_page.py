"""The page at `/` of `lccore serve`, end to end in headless Chromium (Debian's `chromium`, driven
by Playwright without its own browser download): type a text, press Predict, see the label and
the words coloured by attribution; press Generate on a chat run, see the streamed reply.

Skipped when /usr/bin/chromium or playwright is missing, unless LCCORE_REQUIRE_BROWSER=1 (CI)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import stop_process
from test_serve import free_port

CHROMIUM = os.environ.get("LCCORE_TEST_CHROMIUM", "/usr/bin/chromium")


MISSING = [what for what, ok in ((CHROMIUM, os.path.exists(CHROMIUM)), ("playwright", importlib.util.find_spec("playwright") is not None)) if not ok]
REASON = f"needs {' and '.join(MISSING)} (apt-get install chromium; pip install playwright)"
REQUIRED = os.environ.get("LCCORE_REQUIRE_BROWSER") == "1"

if MISSING and not REQUIRED:
    pytest.skip(REASON, allow_module_level=True)


@pytest.fixture(scope="session")
def chromium_ready():
    """Fails first, before any run is trained, when CI requires the browser and it is missing."""
    if MISSING:
        pytest.fail(f"LCCORE_REQUIRE_BROWSER=1 but the page test {REASON}", pytrace=False)


@pytest.fixture(scope="module")
def server(chromium_ready, trained_run, dialogue_run, tmp_path_factory):
    """`lccore serve` on a free localhost port, serving a sentiment run and a chat run."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve-page") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lccore", "serve", str(trained_run.output_dir), str(dialogue_run.output_dir), "--port", str(port)],
            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"server not ready in 60 s:\n{log.read_text()}"
            time.sleep(0.2)
        yield base
    finally:
        stop_process(process)
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: Chromium refuses to run as root (containers, CI) with its sandbox on.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser, server):
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server}/")
    page.wait_for_function("document.querySelectorAll('#model option').length === 2")
    return page, errors


def test_page_predicts_and_colours_words_by_attribution(browser, server, trained_run, tmp_path):
    import lccore

    text = "a great film with superb acting"
    expected = lccore.load(trained_run.output_dir, device="cpu").predict([text])[0]["label"]
    page, errors = open_page(browser, server)
    page.select_option("#model", trained_run.output_dir.name)
    assert page.is_hidden("#generate")  # a classifier does not generate
    page.fill("#text", text)
    page.click("#predict")
    page.wait_for_function("document.querySelectorAll('#words span').length === 6", timeout=20000)
    shown = json.loads(page.text_content("#out"))
    assert shown["label"] == expected
    words = page.eval_on_selector_all("#words span", "spans => spans.map(s => [s.textContent, getComputedStyle(s).backgroundColor])")
    assert [word for word, _ in words] == text.split()
    assert len({colour for _, colour in words}) > 1, words  # the scores differ, so do the colours
    assert all(colour.startswith("rgba(") or colour.startswith("rgb(") for _, colour in words)
    assert "attribution" in page.text_content("#note")
    page.screenshot(path=str(tmp_path / "predict.png"), full_page=True)
    assert (tmp_path / "predict.png").stat().st_size > 1000
    assert errors == []


def test_page_streams_a_generated_reply(browser, server, dialogue_run, tmp_path):
    page, errors = open_page(browser, server)
    page.select_option("#model", dialogue_run.output_dir.name)
    assert page.is_visible("#generate")
    page.fill("#text", "count to three")
    page.click("#generate")
    page.wait_for_function("document.getElementById('out').textContent === 'one two three.'", timeout=20000)
    page.screenshot(path=str(tmp_path / "generate.png"), full_page=True)
    assert errors == []
