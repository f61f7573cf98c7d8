"""The playground page `dgemma serve` ships, in a real headless browser (Playwright driving Debian's
Chromium): it loads, a chat runs with the canvas redrawn at every denoising step, the Sudoku board
fills and ends valid for a puzzle the bundled model solves, server errors are shown, the API key
is honoured. DGEMMA_SCREENSHOTS=DIR saves the screenshots docs/ shows."""

from __future__ import annotations

import contextlib
import http.client as httpclient
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest

import dgemma
from dgemma.apps.sudoku.solver import bundled_model
from dgemma.server.app import ServerSettings
from dgemma.server.launch import running_server
from tests.server_helpers import http

playwright = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (scripts/setup installs Debian's package)"),
]
SOLVED = "700092600600400097040100320070000260000728003289000700810030070030901502090204000"  # by seed 0


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _page(browser, url: str, path: str = "/"):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(url + path)
    return page


def _screenshot(page, name: str) -> None:
    where = os.environ.get("DGEMMA_SCREENSHOTS")
    if where:
        page.screenshot(path=str(Path(where) / name), full_page=True)


def test_sudoku_board_fills_live_and_ends_valid(browser):
    model = dgemma.load(bundled_model())
    with running_server(model, ServerSettings(port=0, model_name="dgemma-sudoku")) as (url, _):
        page = _page(browser, url, "/?mode=sudoku")
        page.wait_for_function("document.getElementById('model').textContent === 'dgemma-sudoku'")
        page.fill("#puzzle", SOLVED)
        page.click("#solve")
        page.wait_for_function("window.dgemma.done >= 1", timeout=60_000)
        assert page.get_attribute("#board", "data-valid") == "true"
        assert page.text_content("#verdict") == "solved: a valid grid"
        steps = page.evaluate("window.dgemma.usage.denoising_steps")
        assert page.evaluate("window.dgemma.drafts") >= steps >= 1  # a redraw per denoising step
        assert len(page.query_selector_all("#board .cell")) == 81
        # the givens are clamped in the canvas (POST /v1/sudoku, as `dgemma sudoku solve` does)
        givens = sum(c != "0" for c in SOLVED)
        assert len(page.query_selector_all("#canvas .tok.clamped")) >= givens
        _screenshot(page, "playground_sudoku.png")


def test_chat_runs_with_the_canvas_redrawn_every_step_and_errors_are_shown(browser, checkpoint):
    model = dgemma.load(checkpoint[0])
    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (url, _):
        page = _page(browser, url)
        page.wait_for_function("document.getElementById('model').textContent === 'tiny'")
        page.fill("#max_denoising_steps", "4")
        page.fill("#prompt", "Why is the sky blue?")
        page.click("#send")
        page.wait_for_function("window.dgemma.done >= 1", timeout=60_000)
        assert (
            page.evaluate("window.dgemma.drafts") >= page.evaluate("window.dgemma.usage.denoising_steps") >= 1
        )
        assert page.query_selector_all("#canvas .tok") and page.query_selector(".msg.user")
        assert page.text_content("#stats").count("denoising steps") == 1
        _screenshot(page, "playground_chat.png")
        page.fill("#max_tokens", "100000000")
        page.fill("#prompt", "again")
        page.click("#send")
        page.wait_for_function("window.dgemma.errors >= 1", timeout=30_000)
        assert "400" in page.text_content("#error") and "max_tokens" in page.text_content("#error")


def test_the_api_key_is_honoured(browser, checkpoint):
    model = dgemma.load(checkpoint[0])
    with running_server(model, ServerSettings(port=0, model_name="tiny", api_key="sekrit")) as (url, _):
        page = _page(browser, url)
        page.wait_for_function("window.dgemma.errors >= 1")
        assert "401" in page.text_content("#error")
        page.fill("#key", "sekrit")
        page.dispatch_event("#key", "change")
        page.wait_for_function("document.getElementById('model').textContent === 'tiny'")
        page.fill("#max_denoising_steps", "2")
        page.fill("#prompt", "hi")
        page.click("#send")
        page.wait_for_function("window.dgemma.done >= 1", timeout=60_000)
        assert page.is_hidden("#error")


def test_no_ui_serves_no_page(checkpoint):
    model = dgemma.load(checkpoint[0])
    with running_server(model, ServerSettings(port=0, ui=False)) as (url, _):
        assert http(url, "GET", "/")[0] == 404
    with running_server(model, ServerSettings(port=0)) as (url, _):
        status, headers, body = http(url, "GET", "/")
        assert (
            status == 200 and headers["content-type"].startswith("text/html") and b"dgemma playground" in body
        )
        assert http(url, "GET", "/ui/app.js")[0] == 200 and http(url, "GET", "/ui/../app.py")[0] == 404


def test_json_mode_returns_an_object_that_validates(browser, checkpoint):
    import json

    import jsonschema

    model = dgemma.load(checkpoint[0])
    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (url, _):
        page = _page(browser, url, "/?mode=json")
        page.wait_for_function("document.getElementById('model').textContent === 'tiny'")
        schema = json.loads(page.input_value("#schema"))
        page.fill("#max_denoising_steps", "4")
        page.click("#generate-json")
        page.wait_for_function("window.dgemma.done >= 1", timeout=60_000)
        jsonschema.validate(json.loads(page.get_attribute("#json-result", "data-raw")), schema)
        assert page.text_content("#json-verdict").startswith("valid against the schema")
        _screenshot(page, "playground_json.png")
        page.fill("#schema", '{"type": "string", "pattern": "(a)\\\\1"}')  # a backreference: refused
        page.click("#generate-json")
        page.wait_for_function("window.dgemma.errors >= 1", timeout=30_000)
        assert "400" in page.text_content("#error")


def test_infill_mode_fills_the_gap_as_the_api_does(browser, checkpoint):
    model = dgemma.load(checkpoint[0])
    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (url, _):
        page = _page(browser, url, "/?mode=infill")
        page.wait_for_function("document.getElementById('model').textContent === 'tiny'")
        page.fill("#max_denoising_steps", "4")
        page.fill("#max_tokens", "8")
        prefix, suffix = page.input_value("#prefix"), page.input_value("#suffix")
        page.click("#fill")
        page.wait_for_function("window.dgemma.done >= 1", timeout=60_000)
        fill = page.get_attribute("#infill-result", "data-fill")
        assert fill == model.infill(prefix, suffix, seed=0, candidates=(2, 4, 8), max_denoising_steps=4).fill
        assert page.text_content("#infill-result") == prefix + fill + suffix
        assert "tokens chosen" in page.text_content("#infill-verdict")
        _screenshot(page, "playground_infill.png")


def test_compare_mode_runs_diffusion_then_ar_with_both_timings(browser, checkpoint):
    model = dgemma.load(checkpoint[0])
    prompt = [{"role": "user", "content": "Write a haiku about the sea."}]
    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (url, _):
        page = _page(browser, url, "/?mode=compare")
        page.wait_for_function("document.getElementById('model').textContent === 'tiny'")
        page.fill("#max_tokens", "24")
        page.fill("#max_denoising_steps", "4")
        page.click("#compare")
        page.wait_for_function(
            "window.dgemma.compare !== null && window.dgemma.compare !== undefined", timeout=60_000
        )
        got = page.evaluate("window.dgemma.compare")
        marks = {page.get_attribute(f"#canvas .tok >> nth={i}", "class") for i in range(4)}
        _screenshot(page, "playground_compare.png")
    ar = model.generate(prompt, mode="ar", max_new_tokens=24, seed=0).texts[0]
    dif = model.generate(prompt, max_new_tokens=24, seed=0, max_denoising_steps=4).texts[0]
    assert got["ar"]["text"] == ar and got["diffusion"]["text"] == dif
    assert got["ar"]["usage"]["denoising_steps"] == 0 and got["diffusion"]["usage"]["denoising_steps"] >= 1
    assert got["ar"]["seconds"] > 0 and got["diffusion"]["seconds"] > 0
    assert "tokens/s" in page.text_content("#cmp-ar .timing") and "x the time" in page.text_content(
        "#cmp-verdict"
    )
    assert marks <= {"tok accepted", "tok renoised", "tok clamped"}


@contextlib.contextmanager
def _proxy(upstream: str, prefix: str):
    """A reverse proxy serving `upstream` under `prefix` (stripped, as nginx's proxy_pass with a
    trailing slash does), streaming bodies through (server-sent events included)."""
    target = urlparse(upstream)

    class Handler(BaseHTTPRequestHandler):
        def _forward(self):
            if not self.path.startswith(prefix):
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            conn = httpclient.HTTPConnection(target.hostname, target.port, timeout=60)
            keep = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
            conn.request(self.command, "/" + self.path[len(prefix) :], body=body or None, headers=keep)
            resp = conn.getresponse()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            while chunk := resp.read1(65536):
                self.wfile.write(chunk)
                self.wfile.flush()
            conn.close()

        do_GET = do_POST = _forward

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_the_page_works_behind_a_path_prefix(browser, checkpoint):
    model = dgemma.load(checkpoint[0])
    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (url, _):
        with _proxy(url, "/dgemma/") as front:
            page = _page(browser, front, "/dgemma/")
            page.wait_for_function("document.getElementById('model').textContent === 'tiny'")
            page.fill("#max_denoising_steps", "2")
            page.fill("#prompt", "hi")
            page.click("#send")
            page.wait_for_function("window.dgemma.done >= 1", timeout=60_000)
            assert page.is_hidden("#error") and page.evaluate("window.dgemma.drafts") >= 1


def test_chat_takes_an_attached_image(browser, tmp_path):
    from tests.checkpoint import make_vision_checkpoint
    from tests.test_vision import _chat, _images, _png

    make_vision_checkpoint(tmp_path / "ckpt", seed=5, std=0.05)
    model = dgemma.load(tmp_path / "ckpt")
    image = _images()["rgb 50x80"]
    (tmp_path / "pic.png").write_bytes(_png(image))
    with running_server(model, ServerSettings(port=0, model_name="tiny-vision")) as (url, _):
        page = _page(browser, url)
        page.wait_for_function("document.getElementById('model').textContent === 'tiny-vision'")
        page.fill("#max_denoising_steps", "4")
        page.set_input_files("#images", str(tmp_path / "pic.png"))
        page.fill("#prompt", "What is in the picture?")
        page.click("#send")
        page.wait_for_function("window.dgemma.done >= 1", timeout=60_000)
        assert page.query_selector("#history .msg.user img.thumb") is not None
        assert page.evaluate("window.dgemma.errors") == 0
        # the server saw the picture: the prompt is the image's soft tokens plus the text
        prompt = model.tokenize(_chat(image, "What is in the picture?"))[0]
        assert page.evaluate("window.dgemma.usage.prompt_tokens") == len(prompt)
        assert (
            page.evaluate("document.getElementById('images').files.length") == 0
        )  # cleared for the next turn
        _screenshot(page, "playground_image.png")
