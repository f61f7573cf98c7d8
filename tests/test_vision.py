"""Image input: the Gemma 4 image processor, the vision tower and the image-token splice, against
transformers 5.23.0 on a tiny checkpoint with a vision tower (float32)."""

from __future__ import annotations

import io
import logging
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import DynamicCache
from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

import dgemma
from dgemma.images.processor import ImageProcessor
from tests.checkpoint import IMAGE_PROCESSOR, make_vision_checkpoint

TOL = 1e-4


def _images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    rgb = lambda h, w: Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))  # noqa: E731
    rgba = Image.fromarray(rng.integers(0, 256, (40, 30, 4), dtype=np.uint8), "RGBA")
    return {
        "rgb 50x80": rgb(50, 80),
        "rgb already on the grid": rgb(84, 96),
        "large 600x900": rgb(600, 900),
        "wide 12x700": rgb(12, 700),
        "tall 500x9": rgb(500, 9),
        "tiny 5x5": rgb(5, 5),
        "rgba": rgba,
        "grey": Image.fromarray(rng.integers(0, 256, (33, 47), dtype=np.uint8), "L"),
        "palette": rgb(30, 30).convert("P"),
    }


@pytest.fixture(scope="module")
def vision(tmp_path_factory):
    """Weights of std 0.05: rounding differences stay at rounding level through the tower and
    the denoising steps, so logits compare at 1e-4 and sampled tokens exactly (std 0.15 turns a
    1e-6 change of one pixel into 1e-3 in the logits)."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    directory = tmp_path_factory.mktemp("vision")
    ref = make_vision_checkpoint(directory, seed=5, std=0.05)
    return directory, ref, dgemma.load(directory)


def _reference_processor():
    return Gemma4ImageProcessorPil(**IMAGE_PROCESSOR)


@pytest.mark.parametrize("name", list(_images()))
def test_preprocessing_equals_the_reference_processor(name):
    image = _images()[name]
    ref = _reference_processor()(images=[image], return_tensors="pt")
    mine = ImageProcessor(**IMAGE_PROCESSOR)(image)
    assert torch.equal(mine.positions, ref["image_position_ids"][0])
    assert mine.num_soft_tokens == ref["num_soft_tokens_per_image"][0]
    assert torch.equal(mine.pixel_values, ref["pixel_values"][0].float())


def _third_party_images() -> list:
    """Photographs and icons nobody here made: the images matplotlib ships (JPEG, RGBA and palette PNGs)."""
    import matplotlib

    data = Path(matplotlib.get_data_path())
    files = [
        data / "sample_data" / n for n in ("grace_hopper.jpg", "logo2.png", "Minduka_Present_Blue_Pack.png")
    ]
    return files + sorted((data / "images").glob("*.png"))[:6]


@pytest.mark.parametrize(
    "budget", [280, 1120]
)  # the 26B checkpoint's default and its largest soft-token budget
@pytest.mark.parametrize("path", _third_party_images(), ids=lambda p: p.name)
def test_preprocessing_of_third_party_images_at_the_real_settings(path, budget):
    settings = {"patch_size": 16, "pooling_kernel_size": 3, "max_soft_tokens": budget}
    image = Image.open(path)
    ref = Gemma4ImageProcessorPil(**settings)(images=[image], return_tensors="pt")
    mine = ImageProcessor(**settings)(image)
    assert mine.num_soft_tokens == ref["num_soft_tokens_per_image"][0]
    assert torch.equal(mine.positions, ref["image_position_ids"][0])
    assert torch.equal(mine.pixel_values, ref["pixel_values"][0].float())


def _prompt(model, n_soft: list[int], text_a: str = "look", text_b: str = "what is it?") -> list[int]:
    v = model.config.vision
    ids = [2] + model.codec.encode_plain(text_a)
    for n in n_soft:
        ids += [v.boi_token_id] + [v.image_token_id] * n + [v.eoi_token_id]
    return ids + model.codec.encode_plain(text_b)


def _batch(images):
    out = _reference_processor()(images=images, return_tensors="pt")
    return out["pixel_values"].float(), out["image_position_ids"], list(out["num_soft_tokens_per_image"])


def test_the_tower_loads_with_the_checkpoint(vision):
    _, ref, model = vision
    assert model.model.vision_tower is not None
    mine = dict(model.model.vision_tower.named_parameters())
    theirs = dict(ref.model.encoder.vision_tower.named_parameters())
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_encoder_and_decoder_logits_with_images(vision):
    _, ref, model = vision
    images = _images()
    pixels, positions, soft = _batch([images["rgb 50x80"], images["rgba"]])
    ids = torch.tensor([_prompt(model, soft)])
    C, V = model.config.canvas_length, model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    canvas = torch.randint(0, V, (1, C), generator=g)
    sc = 3 * torch.randn(1, C, V, generator=g)
    mm = (ids == model.config.vision.image_token_id).long()
    with torch.no_grad():
        masks = ref.model.encoder.create_masks_for_generate(
            config=ref.config,
            inputs_embeds=torch.empty(1, ids.shape[1], 0),
            attention_mask=None,
            past_key_values=None,
            position_ids=torch.arange(ids.shape[1])[None],
            mm_token_type_ids=mm,
        )
        cache = DynamicCache(config=ref.config.get_text_config(decoder=True))
        enc = ref.model.encoder(
            input_ids=ids,
            pixel_values=pixels,
            image_position_ids=positions,
            attention_mask=masks,
            past_key_values=cache,
            mm_token_type_ids=mm,
        )
        cap = ref.config.text_config.final_logit_softcapping
        ref_enc = torch.tanh(ref.lm_head(enc.last_hidden_state).float() / cap) * cap
        ref_dec = ref(past_key_values=cache, decoder_input_ids=canvas, self_conditioning_logits=sc).logits
    mine_enc = model.encoder_logits(ids, pixel_values=pixels, image_position_ids=positions)
    assert (mine_enc - ref_enc).abs().max().item() <= TOL
    mine_dec = model.decoder_logits(ids, canvas, sc, pixel_values=pixels, image_position_ids=positions)
    assert (mine_dec - ref_dec).abs().max().item() <= TOL
    # the image changes the answer: the same prompt with other pixels gives other logits
    other = model.encoder_logits(ids, pixel_values=pixels.flip(1), image_position_ids=positions)
    assert (other - mine_enc).abs().max().item() > 1e-2


def test_a_batch_mixing_text_and_image_rows(vision):
    _, _, model = vision
    images = _images()
    pixels, positions, soft = _batch([images["grey"]])
    with_image, text_only = _prompt(model, soft), _prompt(model, [], "plain", "text row")
    both = model.encoder_logits([text_only, with_image], pixel_values=pixels, image_position_ids=positions)
    alone = model.encoder_logits([with_image], pixel_values=pixels, image_position_ids=positions)
    plain = model.encoder_logits([text_only])
    assert (both[1, : len(with_image)] - alone[0]).abs().max().item() <= 1e-5
    assert (both[0, : len(text_only)] - plain[0]).abs().max().item() <= 1e-5


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _chat(image, text: str = "what is in the picture?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]


def test_chat_prompt_ids_are_the_gemma4_processors(vision):
    """The template's `<|image|>` becomes boi + one image token per soft token + eoi, as the Gemma 4
    processor writes it into the prompt text before tokenizing."""
    directory, _, model = vision
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    image = _images()["large 600x900"]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(directory / "tokenizer.json")),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
    )
    tok.chat_template = (directory / "chat_template.jinja").read_text()
    text = tok.apply_chat_template(_chat(image), tokenize=False, add_generation_prompt=True)
    n = _batch([image])[2][0]
    expanded = text.replace("<|image|>", "<|image>" + "<|image|>" * n + "<image|>")
    assert model.tokenize(_chat(image))[0] == tok(expanded, add_special_tokens=False)["input_ids"]


def test_generate_with_an_image_matches_the_reference_tokens(vision):
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

    from tests.test_generate import SAMPLER

    _, ref, model = vision
    image = _images()["rgb 50x80"]
    ids = model.tokenize(_chat(image))[0]
    pixels, positions, _ = _batch([image])
    mm = (torch.tensor([ids]) == model.config.vision.image_token_id).long()
    torch.manual_seed(11)
    out = ref.generate(
        torch.tensor([ids]),
        pixel_values=pixels,
        image_position_ids=positions,
        mm_token_type_ids=mm,
        max_new_tokens=24,
        eos_token_id=[1],
        pad_token_id=0,
        sampler_config=EntropyBoundSamplerConfig(entropy_bound=0.1),
        **SAMPLER,
    )
    theirs = out.sequences[0, len(ids) :].tolist()
    end = next((i for i, t in enumerate(theirs) if t == 1), len(theirs))
    mine = model.generate(_chat(image), max_new_tokens=24, seed=11, eos_token_ids=[1], **SAMPLER)
    assert mine.token_ids[0] == theirs[: min(end, 24)]
    # and the image matters: another picture, another answer
    other = model.generate(_chat(_images()["rgba"]), max_new_tokens=24, seed=11, eos_token_ids=[1], **SAMPLER)
    assert other.token_ids[0] != mine.token_ids[0]


def test_text_and_image_prompts_batch_as_they_run_alone(vision):
    _, _, model = vision
    images = _images()
    prompts = [_chat(images["grey"]), "no picture here", _chat(images["palette"], "and this?")]
    batch = model.generate(prompts, max_new_tokens=16, seed=[1, 2, 3])
    for i, prompt in enumerate(prompts):
        assert batch.token_ids[i] == model.generate(prompt, max_new_tokens=16, seed=1 + i).token_ids[0]
    ar = model.generate(prompts, mode="ar", max_new_tokens=6)
    assert ar.token_ids[0] == model.generate(prompts[0], mode="ar", max_new_tokens=6).token_ids[0]


def test_image_sources_the_api_takes(vision, tmp_path):
    import base64

    _, _, model = vision
    image = _images()["rgb 50x80"]
    png = _png(image)
    (tmp_path / "a.png").write_bytes(png)
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    want = model.tokenize(_chat(image))[0]
    for source in (str(tmp_path / "a.png"), tmp_path / "a.png", png, url):
        got = model.tokenize(_chat(source))[0]
        assert got == want and torch.equal(got.images[0].pixel_values, want.images[0].pixel_values)
    part = {"type": "image_url", "image_url": {"url": url}}
    got = model.tokenize(
        [{"role": "user", "content": [part, {"type": "text", "text": "what is in the picture?"}]}]
    )
    assert got[0] == want


@pytest.mark.parametrize(
    "source, message",
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image"),
        (b"plain text, not an image", "not an image"),
        ("https://example.com/cat.png", "remote URLs are not fetched"),
        ("data:image/png;base64,!!!!", "not valid base64"),
        ("data:image/png,abc", "data URL must look like"),
        ("/no/such/file.png", "no image file"),
        (42, "expected a PIL image"),
    ],
)
def test_bad_images_are_a_value_error_naming_the_field(vision, source, message):
    _, _, model = vision
    with pytest.raises(ValueError, match=message) as info:
        model.generate(_chat(source), max_new_tokens=8)
    assert "`prompts` image 0" in str(info.value) and "\n" not in str(info.value)


def test_truncated_and_enormous_images_are_refused(vision):
    from dgemma.images import load

    _, _, model = vision
    png = _png(_images()["large 600x900"])
    with pytest.raises(ValueError, match="damaged or truncated"):
        model.tokenize(_chat(png[: len(png) // 2]))
    # a 30000 x 30000 PNG header: refused from its header, before any pixel is decoded
    huge = _png(Image.new("L", (1, 1)))
    ihdr = b"IHDR" + (30000).to_bytes(4, "big") * 2 + huge[24:29]
    huge = huge[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + huge[33:]
    with pytest.raises(ValueError, match="pixels"):
        model.tokenize(_chat(huge))
    with pytest.raises(ValueError, match="bytes; the limit is"):
        model.tokenize(_chat(b"\x00" * (load.MAX_IMAGE_BYTES + 1)))


def test_a_text_only_checkpoint_refuses_images(model):
    with pytest.raises(ValueError, match="no vision tower"):
        model.generate(_chat(_images()["rgb 50x80"]), max_new_tokens=8)


def test_cli_generate_with_an_image(vision, tmp_path):
    import json

    from tests.cli import one_line_error, run

    directory, _, model = vision
    image = _images()["rgb 50x80"]
    (tmp_path / "pic.png").write_bytes(_png(image))
    args = ("generate", "--model", str(directory), "--image", str(tmp_path / "pic.png"))
    proc = run(*args, "what is in the picture?", "--max-new-tokens", "16", "--seed", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    want = model.generate(_chat(image), max_new_tokens=16, seed=3).token_ids[0]
    assert json.loads(proc.stdout)["token_ids"] == want
    (tmp_path / "bad.png").write_bytes(b"not a png")
    one_line_error(run(*args[:3], "--image", str(tmp_path / "bad.png"), "hi"), "not an image file")
    one_line_error(run(*args[:3], "--image", str(tmp_path / "none.png"), "hi"), "no image file")
    one_line_error(run(*args, "--raw", "hi"), "--raw")


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_video_and_audio_parts_are_refused_saying_why(vision, kind):
    _, _, model = vision
    chat = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": "describe"}]}]
    with pytest.raises(ValueError, match=f"no {kind} input"):
        model.generate(chat, max_new_tokens=8)


def test_the_body_limit_grows_only_for_a_model_that_takes_images(vision, model):
    from dgemma.server.app import ServerSettings
    from dgemma.server.launch import running_server

    for m, takes in ((vision[2], True), (model, False)):
        assert (m.builder.images is not None) is takes
        with running_server(m, ServerSettings(port=0)) as (_, server):
            assert server.takes_images is takes
