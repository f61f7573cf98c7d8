"""`dgemma train`: fine-tune a checkpoint on JSONL data, with a progress bar, a loss plot and an export."""

from __future__ import annotations

import argparse

from dgemma.cli.common import add_train_flags, train_config, train_with_progress


def add_parser(sub) -> None:
    tr = sub.add_parser("train", help="fine-tune a checkpoint on JSONL data (prompt/response or messages)")
    tr.add_argument("--model", required=True, help="checkpoint directory to start from")
    tr.add_argument("--data", required=True, help="JSONL file: {prompt, response} or {messages} per line")
    tr.add_argument("--out", required=True, help="run directory: checkpoints, metrics, loss.png, model/")
    add_train_flags(tr, steps=100, batch_size=8, lr=1e-4, warmup=10, ar_weight=1.0)
    tr.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="data-parallel processes on this machine (runs torchrun; same results as one process)",
    )


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.nproc != 1:
        return _torchrun(args.nproc)

    import torch

    import dgemma
    from dgemma.config.files import read_json
    from dgemma.quant.packed import holds_quantized
    from dgemma.train.data import ShuffledData, read_jsonl
    from dgemma.train.distributed import close_world, init_world
    from dgemma.train.export import export
    from dgemma.train.trainer import train

    config = train_config(args)
    world = init_world(torch.device(args.device))
    model = dgemma.load(args.model, dtype="float32", device=args.device)
    if holds_quantized(model.model):
        raise ValueError(
            f"--model: {args.model} holds quantized weights; train the full-precision checkpoint"
        )
    if model.codec is None:
        raise ValueError(f"{args.model} has no tokenizer.json; training data is text")
    eos = model.defaults.eos_token_ids
    if not eos:
        raise ValueError(f"{args.model} defines no end-of-sequence token")
    examples = read_jsonl(Path(args.data), model.codec, eos[0], model.config.max_position_embeddings)
    data = ShuffledData(examples, args.seed)
    out = Path(args.out)
    pad = model.config.pad_token_id or 0
    if not world.main:  # its share of every step; process 0 reports and exports
        train(model.model, data, config, out, pad, world=world)
        close_world(world)
        return 0
    result = train_with_progress(
        lambda log: train(model.model, data, config, out, pad, on_log=log, world=world), config.steps, out
    )
    close_world(world)
    source = Path(args.model)
    config_json = read_json(source / "config.json")
    adapter = ""
    if config.lora_rank:  # the adapter alone, in PEFT's format, before export merges it
        from dgemma.train.peft_format import save_adapter

        adapter = f"; adapter in {save_adapter(model.model, out / 'adapter', str(source))}"
    export(
        model.model, out / "model", model.sampler_defaults, config_json, source, model.defaults.max_new_tokens
    )
    print(f"step {result.step}: loss {result.metrics[-1]['loss']:.4f}; model in {out / 'model'}{adapter}")
    return 0


def _torchrun(nproc: int) -> int:
    """`dgemma train --nproc N ...` as `torchrun --standalone --nproc-per-node N -m dgemma train ...`."""
    import subprocess
    import sys

    if nproc < 1:
        raise ValueError(f"`--nproc` must be >= 1, got {nproc}")
    argv = sys.argv[1:]
    rest, skip = [], False
    for arg in argv:  # the same command line without --nproc
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return subprocess.run([*command, "-m", "dgemma", *rest], check=False).returncode
