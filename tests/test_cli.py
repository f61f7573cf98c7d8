"""The `dgemma generate` command end to end on a tiny checkpoint with a trained tokenizer: in-process,
plus one run through `python -m dgemma` in a subprocess."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.cli import one_line_error, run, run_subprocess

PROMPT = "Why is the sky blue?"


def test_generate_text_uses_chat_template(checkpoint, model):
    directory, _ = checkpoint
    proc = run_subprocess("generate", "--model", str(directory), PROMPT, "--seed", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    expected = model.generate(PROMPT, seed=4)  # the API applies the same chat template
    assert result["token_ids"] == expected.token_ids[0]
    assert result["text"] == model.codec.decode(result["token_ids"])
    stats = result["stats"]
    assert stats["canvases"] == len(stats["steps_per_canvas"]) and stats["decoder_passes"] == sum(
        stats["steps_per_canvas"]
    )
    assert set(stats) >= {"tokens_per_forward", "prefill_s", "denoise_s", "commit_s"}
    rendered = model.codec.render_chat([{"role": "user", "content": PROMPT}])
    assert rendered.startswith("<bos><start_of_turn>user\n") and rendered.endswith("<start_of_turn>model\n")


def test_plain_text_output_and_sampler_flags(checkpoint, model):
    directory, _ = checkpoint
    proc = run(
        "generate",
        "--model",
        str(directory),
        PROMPT,
        "--max-denoising-steps",
        "3",
        "--entropy_bound",
        "0.5",
        "--seed",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    expected = model.generate(PROMPT, seed=1, max_denoising_steps=3, entropy_bound=0.5)
    assert proc.stdout == expected.texts[0] + "\n"


def test_raw_ar_and_batch(checkpoint, model):
    directory, _ = checkpoint
    proc = run(
        "generate",
        "--model",
        str(directory),
        "--raw",
        "--mode",
        "ar",
        "--max-new-tokens",
        "5",
        "--json",
        "The fox",
        "-",
        stdin="Diffusion",
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    expected = model.generate(["The fox", "Diffusion"], mode="ar", raw=True, max_new_tokens=5)
    assert [r["token_ids"] for r in results] == expected.token_ids
    assert model.codec.encode_raw("The fox")[0] == 2  # --raw keeps the tokenizer's own BOS


def test_json_object_prints_one_object_per_answer(checkpoint, model):
    directory, _ = checkpoint
    args = ("generate", "--model", str(directory), "--max-new-tokens", "12", "--json-object", "a", "b")
    proc = run(*args, "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(isinstance(json.loads(line), dict) for line in lines)
    assert lines == model.generate(["a", "b"], json_object=True, seed=3, max_new_tokens=12).texts
    one_line_error(run(*args, "--show-steps"), "--json-object")


def test_tools_print_one_valid_call_per_prompt(checkpoint, model, tmp_path):
    tools = [
        {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {
            "a": {"type": "integer", "maximum": 99}, "b": {"type": "integer", "maximum": 99}}, "required": ["a", "b"]}}},
        {"type": "function", "function": {"name": "noop"}},
    ]  # fmt: skip
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(tools))
    args = (
        "generate",
        "--model",
        str(checkpoint[0]),
        "--tools",
        str(path),
        "--max_denoising_steps",
        "4",
        "x",
        "y",
    )
    proc = run(*args, "--seed", "2")
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in proc.stdout.splitlines()]
    api = model.generate(["x", "y"], tools=tools, tool_choice="required", seed=2, max_denoising_steps=4)
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (t.name, json.loads(t.arguments)) for (t,) in api.tool_calls
    ]
    proc = run(*args, "--tool-choice", "add")
    assert proc.returncode == 0 and all(
        json.loads(line)["name"] == "add" for line in proc.stdout.splitlines()
    )
    one_line_error(run(*args, "--tool-choice", "nope"), "tool_choice")
    path.write_text("[{")
    one_line_error(run(*args), "not valid JSON")


def test_show_steps_renders_drafts(checkpoint):
    directory, _ = checkpoint
    proc = run("generate", "--model", str(directory), PROMPT, "--show-steps", "--max-new-tokens", "16")
    assert proc.returncode == 0, proc.stderr
    assert "canvas 1, step 1" in proc.stdout or "committed" in proc.stdout


@pytest.fixture
def broken(checkpoint, tmp_path):
    directory = tmp_path / "broken"
    shutil.copytree(checkpoint[0], directory)
    return directory


def test_bad_inputs_give_one_line_errors(checkpoint, broken, tmp_path):
    good = str(checkpoint[0])
    one_line_error(run("generate", "--model", str(tmp_path / "none"), "hi"), "model directory not found")
    one_line_error(
        run("generate", "--model", good, "hi", "--max_denoising_steps", "0"), "max_denoising_steps"
    )
    one_line_error(run("generate", "--model", good, "hi", "--entropy-bound", "-1"), "entropy_bound")
    one_line_error(run("generate", "--model", good, "hi", "--max-new-tokens", "0"), "max_new_tokens")
    one_line_error(run("generate", "--model", good, "hi", "--max-new-tokens", "99999999"), "the model allows")
    one_line_error(run("generate", "--model", good, "hi", "--seed", "x"), "invalid int value")
    one_line_error(run("generate", "--model", good, "hi", "--dtype", "int4"), "invalid choice")

    cfg = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    one_line_error(run("generate", "--model", str(broken), "hi"), "model_type 'bert'")
    (broken / "config.json").write_text(json.dumps(cfg))

    tensors = load_file(broken / "model.safetensors")
    tensors.pop("model.decoder.norm.weight")
    save_file(tensors, broken / "model.safetensors")
    one_line_error(run("generate", "--model", str(broken), "hi"), "missing tensor model.decoder.norm.weight")

    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    one_line_error(run("generate", "--model", str(broken), "hi"), "not a readable safetensors file")

    (broken / "model.safetensors").unlink()
    one_line_error(run("generate", "--model", str(broken), "hi"), "no model.safetensors")


def test_broken_checkpoints_fail_in_one_line_not_a_traceback(checkpoint, tmp_path):
    """Issue 12, item 11: NaN weights, a template that overflows range(), no template at all."""
    from safetensors.torch import load_file, save_file

    nan = tmp_path / "nan"
    shutil.copytree(checkpoint[0], nan)
    tensors = load_file(nan / "model.safetensors")
    tensors = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in tensors.items()
    }
    save_file(tensors, nan / "model.safetensors")
    one_line_error(run("generate", "--model", str(nan), "hi"), "generation failed")

    looping = tmp_path / "looping"
    shutil.copytree(checkpoint[0], looping)
    (looping / "chat_template.jinja").write_text("{% for i in range(10**9) %}x{% endfor %}")
    one_line_error(run("generate", "--model", str(looping), "hi"), "the chat template")

    bare = tmp_path / "bare"
    shutil.copytree(checkpoint[0], bare)
    (bare / "chat_template.jinja").unlink()
    proc = run("generate", "--model", str(bare), "hi")
    one_line_error(proc, "no chat template")
    assert "--raw" in proc.stderr
