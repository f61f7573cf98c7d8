"""The `dgemma` command: one entry point, a subcommand per job (a module per command group).

Every failure a user can cause ends in one line on stderr and a non-zero exit, never a traceback.
Parsing the command line imports no torch: each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys

from dgemma.cli import bench, generate, inspect, serve, sudoku, train
from dgemma.cli.common import EXIT_USAGE, Parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dgemma", description="DiffusionGemma: block-diffusion text generation")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    generate.add_parsers(sub)
    train.add_parser(sub)
    serve.add_parser(sub)
    sudoku.add_parser(sub, Parser)
    bench.add_parser(sub)
    inspect.add_parser(sub)
    inspect.add_quantize_parser(sub)
    return parser


COMMANDS = {
    "generate": generate.cmd_generate,
    "infill": generate.cmd_infill,
    "edit": generate.cmd_edit,
    "train": train.cmd_train,
    "serve": serve.cmd_serve,
    "bench": bench.run,
    "sudoku": sudoku.run,
    "inspect": inspect.cmd_inspect,
    "quantize": inspect.cmd_quantize,
}


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 500 else text[:497] + "..."


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError) as err:
        print(f"dgemma: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as err:  # generation failed (e.g. non-finite logits from NaN weights)
        print(f"dgemma: error: generation failed: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
