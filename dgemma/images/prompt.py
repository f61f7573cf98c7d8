"""Images in chat messages: the content parts that carry them, and the tokens they become.

Accepted parts (OpenAI's and transformers' spellings):

    {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}   (or "image_url": "<url>")
    {"type": "image", "image": <PIL image | path | bytes | data URL>}
    {"type": "image", "url": ...} / {"type": "image", "path": ...}

The chat template sees each as {"type": "image"} and writes one image token where it goes (Gemma 4:
`<|image|>`); `expand` then turns that token into begin-of-image, one image token per soft token,
end-of-image, as transformers' Gemma 4 processor does with the prompt text.
"""

from __future__ import annotations

from typing import Any

from dgemma.config.vision import VisionConfig

IMAGE_PART_TYPES = ("image", "image_url")
# parts the chat template knows but DiffusionGemma's encoder takes no features for (transformers
# 5.23.0 splices image soft tokens only): refused rather than rendered as bare placeholders
UNSUPPORTED_PART_TYPES = {
    "video": "DiffusionGemma takes no video input; send the frames you want seen as image parts",
    "audio": "DiffusionGemma takes no audio input",
}
MAX_IMAGES_PER_PROMPT = 16


class PromptIds(list):
    """A prompt's token ids that also carry its preprocessed images (`images`, in prompt order)."""

    images: tuple = ()

    def __init__(self, ids: list[int], images: tuple = ()):
        super().__init__(ids)
        self.images = tuple(images)


def has_images(messages: list[Any]) -> bool:
    return any(
        isinstance(m, dict)
        and isinstance(m.get("content"), list)
        and any(
            isinstance(p, dict)
            and (p.get("type") in IMAGE_PART_TYPES or p.get("type") in UNSUPPORTED_PART_TYPES)
            for p in m["content"]
        )
        for m in messages
    )


def image_source(part: dict, where: str) -> Any:
    """What an image part points at (a PIL image, a path, bytes or a URL string)."""
    if part.get("type") == "image_url":
        ref = part.get("image_url")
        url = ref.get("url") if isinstance(ref, dict) else ref
        if not isinstance(url, str) or not url:
            raise ValueError(f"`{where}.image_url.url` must be a URL string")
        return url
    for key in ("image", "url", "path"):
        if part.get(key) is not None:
            return part[key]
    raise ValueError(f"`{where}` is an image part with no `image`, `url` or `path`")


def take_images(messages: list[dict], field: str = "messages") -> tuple[list[dict], list[Any]]:
    """Messages as the template renders them (image parts reduced to {"type": "image"}), and the
    image sources in the order the template meets them."""
    rendered, sources = [], []
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            rendered.append(message)
            continue
        parts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in UNSUPPORTED_PART_TYPES:
                raise ValueError(f"`{field}[{i}].content[{j}]`: {UNSUPPORTED_PART_TYPES[kind]}")
            if kind in IMAGE_PART_TYPES:
                sources.append(image_source(part, f"{field}[{i}].content[{j}]"))
                parts.append({"type": "image"})
            else:
                parts.append(part)
        rendered.append({**message, "content": parts})
    if len(sources) > MAX_IMAGES_PER_PROMPT:
        raise ValueError(
            f"`{field}` holds {len(sources)} images; a prompt takes at most {MAX_IMAGES_PER_PROMPT}"
        )
    return rendered, sources


def expand(ids: list[int], vision: VisionConfig, soft_tokens: list[int]) -> list[int]:
    """Each image token the template wrote -> boi, `soft_tokens[k]` image tokens, eoi."""
    marker = vision.image_token_id
    found = ids.count(marker)
    if found != len(soft_tokens):
        raise ValueError(f"the chat template wrote {found} image markers for {len(soft_tokens)} images")
    out: list[int] = []
    k = 0
    for token in ids:
        if token == marker:
            out += [vision.boi_token_id, *([marker] * soft_tokens[k]), vision.eoi_token_id]
            k += 1
        else:
            out.append(token)
    return out
