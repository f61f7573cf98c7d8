"""Weight-only quantization: schemes, packed tensors, quantized layers, and load-time application."""

from dgemma.quant.scheme import QuantScheme

__all__ = ["QuantScheme"]
