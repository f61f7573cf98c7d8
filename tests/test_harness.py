"""`dgemma bench`: checkers (accepting and rejecting), suites, every target kind, reports, resuming."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from dgemma.harness.checkers import accept, check_spec
from dgemma.harness.runner import RunSpec, run_suite
from dgemma.harness.suites import Task, load_suite
from dgemma.harness.targets import HfTarget, LocalTarget, OpenAITarget
from dgemma.server.app import ServerSettings
from dgemma.server.launch import running_server
from dgemma.tasks import sudoku

PUZZLE = sudoku.heldout_puzzles(1)[0]


def _checker_module_function(text: str, task: dict) -> bool:
    return text == task["id"]


@pytest.mark.parametrize(
    "spec,good,bad",
    [
        ({"type": "exact", "value": "Paris"}, " Paris\n", "paris"),
        ({"type": "exact", "value": "Paris", "ignore_case": True}, "PARIS", "Lyon"),
        ({"type": "regex", "pattern": r"\b144\b"}, "it is 144.", "1445"),
        (
            {
                "type": "json_schema",
                "schema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            },
            '{"a": 3}',
            '{"a": "3"}',
        ),
        ({"type": "json_schema", "schema": {"type": "integer"}}, "7", "seven"),
        (
            {"type": "sudoku", "puzzle": PUZZLE.puzzle},
            sudoku.to_text(sudoku.solve(sudoku.parse(PUZZLE.puzzle))),
            "1" * 81,
        ),
        (
            {
                "type": "python",
                "prefix": "def f(x):\n    return ",
                "suffix": "\n",
                "asserts": "assert f(2) == 4",
            },
            "x * 2",
            "x +",
        ),
        (
            {"type": "python", "asserts": "assert g() == 1"},
            "def g():\n    return 1",
            "def g():\n    while True: pass",
        ),
        ({"type": "callable", "function": "tests.test_harness:_checker_module_function"}, "t1", "t2"),
    ],
)
def test_checkers_accept_and_reject(spec, good, bad):
    if spec["type"] == "python" and "while" in bad:
        spec = {**spec, "timeout": 2}
    check_spec(spec, "test")
    task = {"id": "t1"}
    assert accept(good, spec, task)
    assert not accept(bad, spec, task)


@pytest.mark.parametrize(
    "line,message",
    [
        ("{not json", "not JSON"),
        (
            '{"prompt": "x", "checker": {"type": "exact", "value": "a"}, "colour": 1}',
            "unknown field 'colour'",
        ),
        ('{"checker": {"type": "exact", "value": "a"}}', "exactly one of"),
        ('{"prompt": "x", "checker": {"type": "nope"}}', "checker.type"),
        ('{"prompt": "x", "checker": {"type": "regex"}}', "needs `pattern`"),
        ('{"prompt": "x", "checker": {"type": "regex", "pattern": "("}}', "bad regex"),
        ('{"prompt": "x", "checker": {"type": "callable", "function": "nowhere:f"}}', "cannot be loaded"),
        (
            '{"prompt": "x", "settings": {"entropy_bound": -1}, "checker": {"type": "exact", "value": "a"}}',
            "entropy_bound",
        ),
        ('{"prompt": "x", "max_tokens": 0, "checker": {"type": "exact", "value": "a"}}', "max_tokens"),
    ],
)
def test_bad_suite_lines_are_named(tmp_path, line, message):
    path = tmp_path / "suite.jsonl"
    path.write_text('{"prompt": "ok", "checker": {"type": "regex", "pattern": "."}}\n' + line + "\n")
    with pytest.raises(ValueError, match="suite.jsonl:2") as err:
        load_suite(str(path))
    assert message in str(err.value)


def test_builtin_suites_load():
    for name in ("json", "infill", "mixed"):
        assert load_suite(name)
    tasks = load_suite("sudoku", limit=3)
    assert [t.checker["puzzle"] for t in tasks] == [p.puzzle for p in sudoku.heldout_puzzles(3)]
    with pytest.raises(ValueError, match="no such built-in suite"):
        load_suite("nope")


TASKS = [
    Task(
        id="any", prompt="Why is the sky blue?", max_tokens=16, checker={"type": "regex", "pattern": "(?s).*"}
    ),
    Task(
        id="never", prompt="Say nothing.", max_tokens=8, checker={"type": "exact", "value": "\x00impossible"}
    ),
    Task(
        id="json",
        prompt="A number as JSON.",
        json_schema={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        checker={
            "type": "json_schema",
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        },
    ),
    Task(
        id="infill",
        infill={"prefix": "def add(a, b):\n    return ", "suffix": "\n"},
        max_tokens=8,
        checker={"type": "regex", "pattern": "(?s).*"},
    ),
]


def test_every_target_kind_on_a_tiny_model(conditioned, tmp_path):
    directory, _, model = conditioned
    local = LocalTarget(model, "diffusion", "local")
    ar = LocalTarget(model, "ar", "local:ar")
    hf = HfTarget(directory, "hf")
    results = {}
    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (url, _):
        remote = OpenAITarget(f"{url}/v1#tiny", "openai")
        for label, target in {"local": local, "local:ar": ar, "hf": hf, "openai": remote}.items():
            results[label] = [target.run(task, 3, {"draw": "reference"}) for task in TASKS]
    for label, attempts in results.items():
        assert all(a.error is None for a in attempts), (label, [a.error for a in attempts])
        assert all(a.latency_s > 0 and 0 <= a.ttfo_s <= a.latency_s for a in attempts), label
    # the same prompt, seed and settings (reference draws): the reference, the engine and the server
    # agree token for token
    assert results["hf"][0].text == results["local"][0].text == results["openai"][0].text
    assert results["local"][0].steps and results["local:ar"][0].steps is None
    assert results["local"][0].peak_mem_mib > 0
    json.loads(results["local"][2].text)  # constrained locally and through the server's response_format
    json.loads(results["openai"][2].text)


def _write_suite(path, n: int) -> None:
    lines = [
        {
            "id": f"t{i}",
            "prompt": f"Question {i}: why?",
            "max_tokens": 16,
            "checker": {"type": "regex", "pattern": "e" if i % 2 else "(?s).*"},
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _bench(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dgemma", "bench", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_bench_command_report_and_sweep(checkpoint, tmp_path):
    from tests.cli import run

    suite = tmp_path / "suite.jsonl"
    _write_suite(suite, 4)
    out = tmp_path / "run"
    args = ["--suite", str(suite), "--model", str(checkpoint[0]), "--target", "local", "--target", "local:ar"]
    proc = run("bench", *args, "--out", str(out), "--max-retries", "2", "--sweep", "max_denoising_steps=2,4")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert set(report["targets"]) == {
        "local [max_denoising_steps=2]",
        "local [max_denoising_steps=4]",
        "local:ar",
    }
    for s in report["targets"].values():
        for key in (
            "acceptance_rate",
            "retry_rate",
            "latency_median_s",
            "latency_p90_s",
            "ttfo_median_s",
            "ttfo_p90_s",
            "tokens_per_s_median",
        ):
            assert s[key] is not None, key
        assert s["tasks"] == 4
    assert report["targets"]["local [max_denoising_steps=2]"]["denoising_steps_median"] <= 2 * 2
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 12 and all(len(r["attempts"]) <= 3 for r in records)
    for name in ("report.md", "latency.png", "acceptance_vs_steps.png"):
        assert (out / name).stat().st_size > 0
    # other settings into the same directory; the bench command's smoke test through `python -m dgemma`
    rerun = _bench(*args, "--out", str(out), "--max-retries", "1")
    assert rerun.wait(timeout=120) == 2 and "other settings" in rerun.stderr.read()


@pytest.mark.slow  # over 10 s on the 2-core machine; CI runs it (./scripts/test --all)
def test_killed_run_resumes_to_the_same_report(checkpoint, tmp_path):
    suite = tmp_path / "suite.jsonl"
    _write_suite(suite, 10)
    args = ["--suite", str(suite), "--model", str(checkpoint[0]), "--target", "local", "--max-retries", "1"]
    whole = _bench(*args, "--out", str(tmp_path / "whole"))
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    out = tmp_path / "cut"
    first = _bench(*args, "--out", str(out))
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while not (results.exists() and len(results.read_text().splitlines()) >= 3):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert len(results.read_text().splitlines()) < 10
    resumed = _bench(*args, "--out", str(out))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()

    def strip(path):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        return sorted(
            (
                r["task"],
                r["accepted"],
                r["retries"],
                [(a["seed"], a["text"], a["tokens"], a["steps"]) for a in r["attempts"]],
            )
            for r in records
        )

    assert strip(out / "results.jsonl") == strip(tmp_path / "whole" / "results.jsonl")
    a = json.loads((out / "report.json").read_text())["targets"]["local"]
    b = json.loads((tmp_path / "whole" / "report.json").read_text())["targets"]["local"]
    for key in (
        "tasks",
        "accepted",
        "acceptance_rate",
        "retry_rate",
        "mean_retries",
        "denoising_steps_median",
    ):
        assert a[key] == b[key], key


def test_run_suite_appends_as_it_goes(model, tmp_path):
    spec = RunSpec("inline", ("local",), "m")
    seen = []
    run_suite(spec, TASKS[:2], {"local": LocalTarget(model, "diffusion", "local")}, tmp_path, seen.append)
    assert [r["task"] for r in seen] == ["any", "never"]
    assert [r["accepted"] for r in seen] == [True, False]
    again = run_suite(spec, TASKS[:2], {"local": None}, tmp_path)  # nothing left to measure: target unused
    assert len(again) == 2


def test_sudoku_file_suite(tmp_path):
    from dgemma.harness.suites import load_suite

    f = tmp_path / "p.txt"
    ps = sudoku.heldout_puzzles(3)
    f.write_text("# puzzles\n" + "".join(p.puzzle.replace("0", ".") + "\n" for p in ps))
    tasks = load_suite(f"sudoku:{f}")
    assert [t.checker["puzzle"] for t in tasks] == [p.puzzle for p in ps]
    assert tasks[0].prompt == f"<bos>{ps[0].puzzle}<sep>" and tasks[0].meta["givens"] == ps[0].num_givens
    with pytest.raises(ValueError, match="no such file"):
        load_suite(f"sudoku:{tmp_path / 'none.txt'}")
