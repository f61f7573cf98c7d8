"""Running the `dgemma` command in tests: in-process by default (no interpreter and torch start-up
per call), or in a subprocess for the one smoke test each command keeps."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import traceback
from dataclasses import dataclass

from dgemma.cli.main import main


@dataclass
class Result:
    """What a finished command left: the shape of subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str


def run(*args: str, stdin: str | None = None) -> Result:
    """`dgemma ARGS` in this process: its exit code and what it printed. An exception that escapes
    the command is a traceback on stderr and exit 1, as it would be in a real process."""
    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit:  # argparse usage errors, --help
                code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
                if isinstance(exit.code, str):
                    err.write(exit.code + "\n")
            except Exception:
                traceback.print_exc(file=err)
                code = 1
    finally:
        sys.stdin = saved_stdin
    return Result(code, out.getvalue(), err.getvalue())


def run_subprocess(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python -m dgemma ARGS` in a fresh process: the smoke test of the installed entry point."""
    return subprocess.run(
        [sys.executable, "-m", "dgemma", *args], capture_output=True, text=True, input=stdin, timeout=300
    )


def one_line_error(proc: Result | subprocess.CompletedProcess, match: str) -> None:
    """The command failed with exactly one `dgemma...error` line naming `match`, and no traceback."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("dgemma") and match in errors[0], errors[0]
