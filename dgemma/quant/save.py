"""`dgemma quantize`: a checkpoint written with its weights quantized, which `dgemma.load` reads
as it is (packed weights and scales under the layers' own names; config.json records the scheme
in `quantization_config`, quant_method "dgemma"). The full-precision original is quantized tensor
by tensor as it loads, never materialised whole; the result is not a transformers checkpoint."""

from __future__ import annotations

from pathlib import Path

from dgemma.config.files import inside, read_json
from dgemma.quant.scheme import QuantScheme


def quantize_checkpoint(source: str | Path, out: str | Path, scheme: QuantScheme) -> Path:
    """Write `source` quantized by `scheme` to `out` (replaced if it exists, never seen half-written)."""
    import dgemma
    from dgemma.train.export import export

    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise ValueError("`--out` must differ from `--model`: the original is read while the copy is written")
    config = read_json(inside(source, "config.json"))
    if "quantization_config" in config:
        raise ValueError(
            f"{source} is quantized already ({config['quantization_config'].get('quant_method')})"
        )
    group = scheme.group_size if scheme.bits == 4 else None
    model = dgemma.load(
        source, dtype="float32", quantize=scheme.name, group_size=group, quantize_components=scheme.components
    )
    config["quantization_config"] = scheme.to_config()
    return export(
        model.model,
        out,
        model.sampler_defaults,
        config_json=config,
        tokenizer_dir=source,
        max_new_tokens=model.defaults.max_new_tokens,
    )
