"""lm-evaluation-harness against `dgemma serve`: a multiple-choice (loglikelihood) task and a
generate-until task, both written here, through lm-eval's own `local-completions` model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[dev]')")

MC = [
    {"question": "The sky is", "choices": ["blue", "green"], "label": 0},
    {"question": "Two plus two is", "choices": ["four", "five"], "label": 0},
    {"question": "Water is", "choices": ["dry", "wet"], "label": 1},
]
GEN = [{"question": "Say yes:", "answer": "yes"}, {"question": "Say no:", "answer": "no"}]


def _task(name: str, data: str, body: str) -> str:
    return (
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        f'test_split: test\ndoc_to_text: "{{{{question}}}}"\n{body}'
    )


GENERATE_UNTIL = (
    "output_type: generate_until\ndoc_to_target: answer\n"
    'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 8\nmetric_list:\n  - metric: exact_match\n'
)


def _lm_eval(kind: str, args: str, tasks, out, *flags: str) -> subprocess.CompletedProcess:
    """`lm_eval --model KIND` on the tasks in `tasks`, offline, samples logged to `out`."""
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    names = ",".join(sorted(p.stem for p in tasks.glob("*.yaml")))
    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", kind, "--model_args", args, "--tasks", names,
         "--include_path", str(tasks), "--output_path", str(out), "--log_samples", *flags],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow  # ~20 s: lm-eval's imports and a server; CI runs it (./scripts/test --all)
def test_lm_eval_local_completions_scores_and_generates_through_the_server(model, tmp_path):
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    from dgemma.server.app import ServerSettings
    from dgemma.server.launch import running_server

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "mc.jsonl").write_text("".join(json.dumps(d) + "\n" for d in MC))
    (tasks / "gen.jsonl").write_text("".join(json.dumps(d) + "\n" for d in GEN))
    (tasks / "dg_mc.yaml").write_text(
        _task("dg_mc", tasks / "mc.jsonl", 'output_type: multiple_choice\ndoc_to_choice: "{{choices}}"\n'
              "doc_to_target: label\nmetric_list:\n  - metric: acc\n")
    )  # fmt: skip
    (tasks / "dg_gen.yaml").write_text(_task("dg_gen", tasks / "gen.jsonl", GENERATE_UNTIL))
    out = tmp_path / "out"
    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (url, _):
        # lm-eval's defaults: it finds /tokenizer_info and /tokenize and tokenizes through the server
        proc = _lm_eval("local-completions", f"model=tiny,base_url={url}/v1/completions", tasks, out)
        assert "remote tokenizer" in proc.stderr.lower()
        # the loglikelihoods lm-eval recorded are the encoder's: the continuation's log-probabilities
        # summed, with lm-eval's own split of (context, continuation)
        lm = LocalCompletionsAPI(base_url=f"{url}/v1/completions", tokenizer_backend="remote")
        samples = _samples(out, "dg_mc")
        assert len(samples) == len(MC)
        for sample in samples:
            for arguments, (response,) in zip(sample["arguments"].values(), sample["resps"], strict=True):
                context, continuation = lm._encode_pair(arguments["arg_0"], arguments["arg_1"])
                scored = model.score([context + continuation])[0][len(context) :]
                assert float(response[0]) == pytest.approx(sum(lp.logprob for lp in scored), abs=1e-4)
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    assert 0 <= results["dg_mc"]["acc,none"] <= 1 and 0 <= results["dg_gen"]["exact_match,none"] <= 1
    generated = _samples(out, "dg_gen")
    assert len(generated) == len(GEN) and all(isinstance(s["resps"][0][0], str) for s in generated)


def _samples(out, task: str) -> list[dict]:
    return [json.loads(line) for line in next(out.rglob(f"samples_{task}_*.jsonl")).read_text().splitlines()]


@pytest.mark.slow  # ~15 s: lm-eval's imports and a server; CI runs it (./scripts/test --all)
def test_lm_eval_local_chat_completions_generates_through_the_server(model, tmp_path):
    """lm-eval's `local-chat-completions` (the chat endpoint, with --apply_chat_template): the
    requests it sends are accepted and every sample gets the server's answer."""
    from dgemma.server.app import ServerSettings
    from dgemma.server.launch import running_server

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "gen.jsonl").write_text("".join(json.dumps(d) + "\n" for d in GEN))
    (tasks / "dg_chat.yaml").write_text(_task("dg_chat", tasks / "gen.jsonl", GENERATE_UNTIL))
    out = tmp_path / "out"
    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (url, _):
        args = f"model=tiny,base_url={url}/v1/chat/completions,num_concurrent=2"
        _lm_eval("local-chat-completions", args, tasks, out, "--apply_chat_template")
    samples = _samples(out, "dg_chat")
    assert len(samples) == len(GEN) and all(isinstance(s["resps"][0][0], str) for s in samples)
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    assert 0 <= results["dg_chat"]["exact_match,none"] <= 1
