"""Matrix-product precision of a run: "fp32" (IEEE float32, torch's default) or "tf32".

TF32 (CUDA, Ampere and later) multiplies float32 matrices with 10-bit mantissas and float32
accumulation: several times the matmul throughput, about 1e-3 relative error per product.
Only CUDA matrix products are affected; on CPU both settings compute the same bits. torch
holds the setting process-wide, so it is set for the run and restored after it (the worker
runs one job per process).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from dr_core.config import PRECISIONS


@contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """Inside the block, CUDA float32 matrix products run in ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: must be one of {PRECISIONS}, got {precision!r}")
    matmul = torch.backends.cuda.matmul
    new_api = hasattr(matmul, "fp32_precision")  # torch >= 2.9; mixing both APIs is an error
    before = matmul.fp32_precision if new_api else matmul.allow_tf32
    if new_api:
        matmul.fp32_precision = "tf32" if precision == "tf32" else "ieee"
    else:
        matmul.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        if new_api:
            matmul.fp32_precision = before
        else:
            matmul.allow_tf32 = before
