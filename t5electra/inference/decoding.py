"""The T5 decoding fast path: the matmul a decoding step runs its projections with.

``T5Stack.decode`` passes :func:`decode_linear` (or a model's :class:`PackedLinears`) to the blocks
as ``linear``; nn/linear.py routes every projection through it. :func:`optimize_for_decoding`
(``T5ForConditionalGeneration.optimize_for_decoding``) prepares a model's weights for it.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..machine import cpu_vendor
from .fingerprint import Fingerprint, PreparedCopy, all_match, stamp


def decode_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight)`` (no bias) for the few rows of a decoding step: x (N, t, in) -> (N, t, out).

    With 2 to 8 rows, ``(weight @ x^T)^T`` is up to twice as fast as ``x @ weight^T`` on CPU with
    PyTorch's MKL (measured on the 2-core AMD EPYC of docs/performance.md: the ``x @ W^T`` call for
    a few rows packs the whole weight matrix first, the other orientation streams it once). The
    sums run in another order, so results differ in the last bits (~1e-6 relative). The small
    result is made contiguous: SDPA's fused CPU kernel needs unit-stride heads.

    With one row (greedy batch 1) a step is bound by how fast the weights stream from memory, and
    MKL's matrix-vector product streamed them at 10-15 GB/s on the 2-core AMD EPYC of
    docs/inference.md where a plain sum over the same 88 MB reached 24 GB/s. With a column-major
    weight (``optimize_for_decoding``) ``W^T`` (in, out) is contiguous, and ``x W^T`` is the sum
    of its rows weighted by x: exactly what an EmbeddingBag in "sum" mode with per-sample weights
    computes, through fbgemm's streaming kernel. :func:`one_row_linear` runs it as a few bags of
    consecutive rows (in parallel over the threads) and adds their partial sums. Wider outputs
    (``ONE_ROW_BAGS_MAX_OUT``) are cut into one column block of ``W^T`` per thread (strided
    views, no copy) and run as one batched matmul, which MKL spreads over the threads (its
    matrix-vector product alone uses one). On Intel CPUs MKL's own product on the contiguous
    ``W^T`` was the fastest of the three and runs instead (``ONE_ROW_KERNEL``).
    """
    n, t, i = x.shape
    if x.device.type == "cpu":
        out = weight.shape[0]
        column_major = weight.stride() == (1, out)
        if n * t == 1 and column_major and x.dtype == weight.dtype:
            if ONE_ROW_KERNEL == "mkl" and x.dtype == torch.float32:
                return F.linear(x, weight)
            if (ONE_ROW_KERNEL == "bags" and out <= ONE_ROW_BAGS_MAX_OUT and x.dtype == torch.float32
                    and not torch.is_grad_enabled()):
                return one_row_linear(x, weight)
            k = torch.get_num_threads()
            if k > 1 and out % k == 0:  # one column block of W^T (in, out/k) per thread, a view: one bmm
                c = out // k
                blocks = weight.t().as_strided((k, i, c), (c, out, 1))
                return torch.bmm(x.reshape(1, 1, i).expand(k, 1, i), blocks).view(n, t, out)
        if 2 <= n * t <= 8 and weight.is_contiguous():
            return (weight @ x.reshape(n * t, -1).t()).t().contiguous().view(n, t, out)
    return F.linear(x, weight)


# fbgemm's kernels need AVX2; without them PyTorch's own embedding-bag loop would run (not measured)
_FBGEMM = "fbgemm" in torch.backends.quantized.supported_engines
_embedding_bag = torch.ops.aten._embedding_bag_forward_only
# bags of consecutive rows of W^T per thread: 1, 2 and 4 gave 11.0, 10.7 and 10.3 ms a token
# (T5-small greedy batch 1, 2 threads, 5 alternated runs: within the VM's noise)
ONE_ROW_BAGS_PER_THREAD = 2
# Widest output the bags run: every decoder matrix of the T5 sizes, not a vocabulary-sized output
# layer (the full product of sampling), where one column block of W^T per thread through one bmm
# was as fast or faster (32128 x 512: 12.4 vs 12.7 ms a sampled token; docs/performance.md)
ONE_ROW_BAGS_MAX_OUT = 8192


def _one_row_kernel() -> str:
    """What multiplies one fp32 row by a column-major weight (greedy batch 1): "bags"
    (:func:`one_row_linear`), or "mkl" (``F.linear``: MKL's matrix-vector product on W^T, which is
    contiguous) on Intel CPUs, or "blocks" (the column-block bmm) without fbgemm.

    By vendor, a fixed rule (as ``machine.onednn_fp32_preferred``): MKL takes slower paths on AMD
    CPUs. Measured, T5-small greedy batch 1, 2 threads, alternated, same tokens: on the AMD EPYC
    Zen 4 the bags took a token from 13.1 to 10.9 ms (against the column blocks); on the AMX Xeon of
    4 Dec 2026 the bags were the slower path, 6.7-7.1 ms a token against 6.1 for ``F.linear`` (the
    36 decoder products alone: bags 2.75 ms, blocks 2.59, ``F.linear`` 2.26)."""
    if not _FBGEMM:
        return "blocks"
    return "mkl" if cpu_vendor() == "GenuineIntel" else "bags"


ONE_ROW_KERNEL = _one_row_kernel()


def one_row_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight)`` for one row x (1, 1, in) and a column-major fp32 ``weight`` (out, in)
    on CPU: ``sum_i x[i] * W^T[i, :]`` as an EmbeddingBag with per-sample weights x over the rows
    of ``W^T`` (in, out), cut into bags of consecutive rows that the threads share, then the bags'
    partial sums added. Every output is the same dot product summed in another order (~1e-6
    relative to F.linear). Measured on the 2-core AMD EPYC (AVX-512), 2 threads, T5-small's 36
    decoder products (88 MB): 6.4 -> 4.8 ms (MKL's blocked matrix-vector product of the previous
    version: 13.7 GB/s; bags: 18.4); T5-small greedy batch 1 13.1 -> 10.9 ms a token (7
    alternated runs, same tokens); on one thread no faster and no slower (15.2 / 14.8 ms)."""
    return _bag_product(x, weight.t())


def _bag_product(x: torch.Tensor, wt: torch.Tensor) -> torch.Tensor:
    """x (1, 1, in) @ wt (in, out, contiguous) -> (1, 1, out): :func:`one_row_linear`'s kernel."""
    i = wt.shape[0]
    rows, offsets = _bags(i, ONE_ROW_BAGS_PER_THREAD * torch.get_num_threads())
    sums = _embedding_bag(wt, rows, offsets, False, 0, False, x.reshape(i))[0]   # (bags, out); mode 0 = sum
    return sums.sum(0).view(1, 1, -1)


@functools.cache
def _bags(n: int, bags: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices 0..n-1 and the offsets of ``bags`` runs of consecutive rows (at most n)."""
    bags = max(1, min(bags, n))
    return torch.arange(n), torch.arange(bags) * n // bags


@functools.cache
def packing_available(dtype: torch.dtype) -> bool:
    """Whether oneDNN packs weights of ``dtype`` on this CPU. bf16 needs AVX512-BW/VL/DQ or
    AVX-NE-CONVERT, fp16 AVX512-FP16 or AVX-NE-CONVERT; elsewhere ``mkldnn._reorder_linear_weight``
    raises ("bf16 path needs the cpu support ...", found under ``ONEDNN_MAX_CPU_ISA=AVX2``; "fp16
    path needs ...": an fp16 T5's default ``optimize_for_inference()`` raised on AVX2 and
    AVX512-BF16 CPUs, and a server with ``dtype: float16`` did not start). Probed once per dtype on
    a small matrix."""
    if not PackedLinears.available():
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(16, 16, dtype=dtype), 1)
    except RuntimeError:
        return False
    return True


def bf16_packing_available() -> bool:
    """:func:`packing_available` for bf16 (``Bf16Native``'s packed weights)."""
    return packing_available(torch.bfloat16)


class PackedLinears(PreparedCopy):
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
                if not packing_available(w.dtype):
                    continue  # a bf16 / fp16 model on a CPU without those kernels: the plain path (decode_linear)
                if id(w) not in self.packs:
                    packed = torch.ops.mkldnn._reorder_linear_weight(w.detach().contiguous(), 16)
                    one_row = (w.detach().t() if ONE_ROW_KERNEL == "bags" and w.dtype == torch.float32
                               and w.stride() == (1, w.shape[0])
                               and w.shape[0] <= ONE_ROW_BAGS_MAX_OUT else None)  # W^T (in, out), a view: the bags' table
                    self.packs[id(w)] = (w, stamp(w), packed, one_row, Fingerprint(w, every_row=False))

    def drop_changed(self) -> int:
        """Forget the copies whose weight changed; returns how many had changed behind the version
        counter (edited through ``.data``: fingerprint.py)."""
        behind = 0
        current = {key: e[1] == stamp(e[0]) for key, e in self.packs.items()}
        if all(current.values()) and all_match([e[4] for e in self.packs.values()]):
            return 0
        for key, (w, *_, fingerprint) in list(self.packs.items()):
            if not current[key] or not fingerprint.matches(w):
                behind += current[key]
                del self.packs[key]
        return behind

    def one_row_table(self, weight: torch.Tensor) -> torch.Tensor | None:
        """``W^T``, the table of the one-row kernel ``self(x, weight)`` runs for an fp32 row without
        grad (inference/decoder_step.py calls it directly), or None where it would not run."""
        entry = self.packs.get(id(weight))
        if entry is None or entry[1] != stamp(weight) or weight.dtype is not torch.float32:
            return None
        return entry[3]

    @staticmethod
    def available() -> bool:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")

    def __call__(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        entry = self.packs.get(id(weight))
        # x of another dtype than the weight: bf16 activations under torch.autocast, which oneDNN
        # refused against the fp32 packed weight; decode_linear's F.linear lets autocast decide
        if entry is not None and entry[1] == stamp(weight) and x.device.type == "cpu" and x.dtype == weight.dtype:
            if x.shape[0] * x.shape[1] > 1:
                return torch.ops.mkldnn._linear_pointwise(x, entry[2], None, "none", [], "")
            if entry[3] is not None and x.dtype is torch.float32 and not torch.is_grad_enabled():
                return _bag_product(x, entry[3])  # decode_linear's one-row path, its checks made once here
        return decode_linear(x, weight)


@torch.no_grad()
def optimize_for_decoding(model, pack_weights: bool = True):
    """Column-major decoder and output weights (where the one-row kernel streams W^T: not on
    Intel CPUs, where MKL's product on the row-major weight was as fast, ``ONE_ROW_KERNEL``), and
    (``pack_weights``) oneDNN-packed copies for the steps with 2 or more rows; see
    ``T5ForConditionalGeneration.optimize_for_decoding``. Sets ``model._column_major``.
    ``model``: a T5ForConditionalGeneration (its ``decoder.step_linears()``, ``shared``, ``lm_head``).

    Measured on the AMX Xeon of 4 Dec 2026 (T5-small greedy batch 1, 2 threads, 9 alternated runs,
    same tokens): the plain model 5.83 ms a token, column-major weights alone 6.01, column-major +
    packed copies 6.26, packed copies on row-major weights 5.87."""
    linears = model.decoder.step_linears()  # every matrix a decoding step multiplies by
    linears.append(model.shared if model.lm_head is None else model.lm_head)
    on_cpu = model.shared.weight.device.type == "cpu"
    model._column_major = ONE_ROW_KERNEL != "mkl" or not on_cpu
    for m in linears:
        if model._column_major and m.weight.is_contiguous():
            m.weight.data = m.weight.data.t().contiguous().t()
    model._packed_linears = None
    if pack_weights and PackedLinears.available() and on_cpu:
        model._packed_linears = PackedLinears([m.weight for m in linears])
    return model
