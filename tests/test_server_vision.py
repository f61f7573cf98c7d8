"""Images through the server: the `openai` client with data-URL images, continuous batching with
text requests, and every bad image a 400 naming `messages` while the server keeps serving."""

from __future__ import annotations

import base64
import logging
import threading

import pytest
from openai import BadRequestError, OpenAI
from PIL import Image

import dgemma
from dgemma.server.app import ServerSettings
from dgemma.server.launch import running_server
from tests.checkpoint import make_vision_checkpoint
from tests.server_helpers import post_json
from tests.test_vision import _chat, _images, _png

NAME = "tiny-vision"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    logging.getLogger("transformers").setLevel(logging.ERROR)
    directory = tmp_path_factory.mktemp("vision-server")
    make_vision_checkpoint(directory, seed=5, std=0.05)
    model = dgemma.load(directory)
    with running_server(model, ServerSettings(port=0, model_name=NAME, max_batch=4)) as (url, _):
        yield url, model


def _url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _messages(url: str, text: str = "what is in the picture?") -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]
    return [{"role": "user", "content": parts}]


def test_the_openai_client_sends_a_data_url_image(served):
    url, model = served
    image = _images()["rgb 50x80"]
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model=NAME, messages=_messages(_url(_png(image))), max_tokens=16, seed=4
    )
    want = model.generate(_chat(image), max_new_tokens=16, seed=4)
    assert reply.choices[0].message.content == want.texts[0]
    assert reply.usage.prompt_tokens == len(model.tokenize(_chat(image))[0])
    chunks = client.chat.completions.create(
        model=NAME, messages=_messages(_url(_png(image))), max_tokens=16, seed=4, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want.texts[0]


def test_image_and_text_requests_batch_together(served):
    url, model = served
    images = _images()
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    jobs = [
        ("grey", _messages(_url(_png(images["grey"])))),
        (None, [{"role": "user", "content": "no picture here"}]),
        ("palette", _messages(_url(_png(images["palette"])), "and this?")),
        (None, [{"role": "user", "content": "another plain one"}]),
    ]
    replies: dict[int, str] = {}

    def ask(i: int) -> None:
        r = client.chat.completions.create(model=NAME, messages=jobs[i][1], max_tokens=16, seed=10 + i)
        replies[i] = r.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (name, messages) in enumerate(jobs):
        prompt = _chat(images[name], messages[0]["content"][1]["text"]) if name else messages
        assert replies[i] == model.generate(prompt, max_new_tokens=16, seed=10 + i).texts[0]


def _huge_png() -> bytes:
    import zlib

    png = _png(Image.new("L", (1, 1)))
    ihdr = b"IHDR" + (30000).to_bytes(4, "big") * 2 + png[24:29]
    return png[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + png[33:]


@pytest.mark.parametrize(
    "image_url, message",
    [
        ("https://example.com/cat.png", "remote URLs are not fetched"),
        (_url(_png(_images()["large 600x900"])[:3000]), "damaged or truncated"),
        (_url(b"GIF89a but not really an image"), "not an image"),
        (_url(b"%PDF-1.4 a document"), "not an image"),
        (_url(_huge_png()), "pixels"),
        ("data:image/png;base64,@@@", "not valid base64"),
        ("not a url at all", "no image file"),
    ],
)
def test_bad_images_are_a_400_and_the_server_keeps_serving(served, image_url, message):
    url, _ = served
    status, body = post_json(
        url, "/v1/chat/completions", {"model": NAME, "messages": _messages(image_url), "max_tokens": 8}
    )
    assert status == 400, body
    assert body["error"]["param"] == "messages" and message in body["error"]["message"]
    ok, reply = post_json(
        url,
        "/v1/chat/completions",
        {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
    )
    assert ok == 200, reply


def test_malformed_image_parts_and_the_openai_error(served):
    url, _ = served
    bad = [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]
    status, body = post_json(url, "/v1/chat/completions", {"model": NAME, "messages": bad})
    assert status == 400 and "image_url.url" in body["error"]["message"]
    status, body = post_json(
        url,
        "/v1/chat/completions",
        {"model": NAME, "messages": [{"role": "user", "content": [{"type": "audio"}]}]},
    )
    assert status == 400 and "text or an image_url part" in body["error"]["message"]
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    with pytest.raises(BadRequestError, match="remote URLs"):
        client.chat.completions.create(
            model=NAME, messages=_messages("http://example.com/a.png"), max_tokens=8
        )
