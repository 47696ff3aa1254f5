"""The T5 decoding fast path: the matmul a decoding step runs its projections with.

``T5Stack.decode`` passes :func:`decode_linear` (or a model's :class:`PackedLinears`) to the blocks
as ``linear``; nn/linear.py routes every projection through it. :func:`optimize_for_decoding`
(``T5ForConditionalGeneration.optimize_for_decoding``) prepares a model's weights for it.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def decode_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight)`` (no bias) for the few rows of a decoding step: x (N, t, in) -> (N, t, out).

    With 2 to 8 rows, ``(weight @ x^T)^T`` is up to twice as fast as ``x @ weight^T`` on CPU with
    PyTorch's MKL (measured on the 2-core AMD EPYC of docs/performance.md: the ``x @ W^T`` call for
    a few rows packs the whole weight matrix first, the other orientation streams it once). The
    sums run in another order, so results differ in the last bits (~1e-6 relative). The small
    result is made contiguous: SDPA's fused CPU kernel needs unit-stride heads.

    With one row (greedy batch 1) and a column-major weight (``optimize_for_decoding``), MKL's
    matrix-vector product runs on one thread whatever ``torch.set_num_threads`` says, and a step
    is bound by how fast the weights stream from memory. The product is therefore cut into one
    column block of ``W^T`` (in, out) per thread (strided views, no copy) and run as one batched
    matmul, which MKL spreads over the threads. Measured on the 2-core AMD EPYC (AVX-512) of
    docs/inference.md: T5-small greedy batch 1 at 2 threads, 71-72 -> 88 tokens/s (medians of 8
    alternated runs; 4 blocks 81-83, 8 blocks 78-79), 55-58 -> 65 in a later, slower hour of the
    same VM (blocking only the output layer: 57-61); not measured beyond 2 threads. Each output
    is the same dot product: bitwise equal to the plain product in the cases measured, the same
    greedy tokens in the tests.
    """
    n, t, i = x.shape
    if x.device.type == "cpu":
        out = weight.shape[0]
        k = torch.get_num_threads()
        if n * t == 1 and k > 1 and out % k == 0 and weight.stride() == (1, out) and weight.dtype == x.dtype:
            c = out // k
            blocks = weight.t().as_strided((k, i, c), (c, out, 1))  # (k, in, out/k): k column blocks of W^T
            return torch.bmm(x.reshape(1, 1, i).expand(k, 1, i), blocks).view(n, t, out)
        if 2 <= n * t <= 8 and weight.is_contiguous():
            return (weight @ x.reshape(n * t, -1).t()).t().contiguous().view(n, t, out)
    return F.linear(x, weight)


@functools.cache
def bf16_packing_available() -> bool:
    """Whether oneDNN packs bf16 weights on this CPU: it needs AVX512-BW/VL/DQ or AVX-NE-CONVERT, and
    on an AVX2-only CPU ``mkldnn._reorder_linear_weight`` raises ("bf16 path needs the cpu support
    ...": found under ``ONEDNN_MAX_CPU_ISA=AVX2``). Probed once on a small matrix."""
    if not PackedLinears.available():
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(16, 16, dtype=torch.bfloat16), 1)
    except RuntimeError:
        return False
    return True


class PackedLinears:
    """oneDNN-packed copies of weight matrices for the decoding steps with 2 or more rows.

    ``torch.ops.mkldnn._reorder_linear_weight`` lays a weight out in oneDNN's blocked format once
    (what torch.compile's CPU backend does with frozen weights), and ``_linear_pointwise`` then
    multiplies without repacking: for 4 to 64 rows, 1.2-1.8x faster than ``F.linear`` on the AMD
    EPYC of docs/performance.md. A copy is only used while its weight is unchanged (same storage,
    same version counter): after training, the plain path runs until ``optimize_for_decoding``
    is called again.
    """

    def __init__(self, weights: list[torch.Tensor]):
        self.packs = {}
        with torch.no_grad():
            for w in weights:  # a tied matrix appears once
                if w.dtype == torch.bfloat16 and not bf16_packing_available():
                    continue  # a bf16 model on an AVX2-only CPU: the plain path (decode_linear)
                if id(w) not in self.packs:
                    packed = torch.ops.mkldnn._reorder_linear_weight(w.detach().contiguous(), 16)
                    self.packs[id(w)] = (w, w._version, w.data_ptr(), packed)

    def __deepcopy__(self, memo) -> None:
        return None  # a copied model has its own weights: it decodes on the plain path until optimised

    @staticmethod
    def available() -> bool:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")

    def __call__(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        entry = self.packs.get(id(weight))
        if (entry is not None and x.shape[0] * x.shape[1] > 1 and entry[1] == weight._version
                and entry[2] == weight.data_ptr() and x.device.type == "cpu"):
            return torch.ops.mkldnn._linear_pointwise(x, entry[3], None, "none", [], "")
        return decode_linear(x, weight)


@torch.no_grad()
def optimize_for_decoding(model, pack_weights: bool = True):
    """Column-major decoder and output weights, and (``pack_weights``) oneDNN-packed copies for
    the steps with 2 or more rows; see ``T5ForConditionalGeneration.optimize_for_decoding``.
    ``model``: a T5ForConditionalGeneration (its ``decoder.step_linears()``, ``shared``, ``lm_head``)."""
    linears = model.decoder.step_linears()  # every matrix a decoding step multiplies by
    linears.append(model.shared if model.lm_head is None else model.lm_head)
    for m in linears:
        if m.weight.is_contiguous():
            m.weight.data = m.weight.data.t().contiguous().t()
    model._packed_linears = None
    if pack_weights and PackedLinears.available() and model.shared.weight.device.type == "cpu":
        model._packed_linears = PackedLinears([m.weight for m in linears])
    return model
