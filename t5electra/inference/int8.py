"""fbgemm's int8 kernels on CPU, and the greedy argmax they make cheap without changing it.

- :func:`fbgemm_available`, :func:`fbgemm_int8_full_range`: what this torch build and CPU can run
  (probed at run time).
- :func:`quantize_int8_per_channel`: the int8 weights of ``optimize_for_inference("int8")``.
- :class:`ScreenedArgmax`: the fp32 path's greedy decoding step without the full fp32 output
  layer. At batch 1 a decoding step streams every decoder weight and the output matrix
  (T5-small: 32128 x 512, 66 MB in fp32, ~40 % of the bytes of a step) from memory, yet greedy
  search needs only the index of the largest logit. The int8 copy of the output matrix (16 MB)
  gives approximate logits plus a proven bound on their error; only the tokens whose bound
  reaches the best lower bound (median 1, at most ~100 of 32128 on the models measured) are scored
  again with the fp32 weights, and the argmax is taken over those exact scores. The chosen
  token is the fp32 argmax: the bound is a worst case, not an estimate
  (tests/inference/test_screened_argmax.py measures how far inside it the real errors stay).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import torch

from .fingerprint import Fingerprint, PreparedCopy, stamp


def fbgemm_available() -> bool:
    """fbgemm's x86 kernels (fp16-weight and dynamic int8 linear) are built into this torch."""
    return "fbgemm" in torch.backends.quantized.supported_engines


@functools.cache
def fbgemm_int8_full_range() -> bool:
    """Whether fbgemm's dynamic int8 linear can take 8-bit activations (``reduce_range=False``) here.

    Without AVX512-VNNI, fbgemm multiplies uint8 x int8 with ``vpmaddubsw``, which adds pairs of
    products into int16 and saturates (255 * 127 * 2 > 32767): hence the usual 7-bit activations.
    With VNNI (``vpdpbusd``, int32 sums) the 8th bit is free and halves the activation rounding
    (measured on the quickstart's T5: span-filling tokens equal to fp32's 91.6 -> 95.0 %,
    docs/inference.md). Probed, not read from the flags: an input where every pair saturates int16
    must come out exact to fp32 rounding, or 7 bits are used."""
    if not fbgemm_available():
        return False
    x = torch.ones(4, 64)                       # quantises to 255 everywhere (scale 1/255, zero point 0)
    x[:, 0] = 0.0
    w = torch.ones(8, 64)                       # quantises to 127 everywhere
    # fp32 whatever the caller's context: a first call inside a bf16 autocast multiplied x @ w.t() in
    # bf16 (an error, or a wrong answer that the cache would keep)
    with warnings.catch_warnings(), torch.autocast("cpu", enabled=False):
        warnings.simplefilter("ignore")
        scale = torch.full((8,), 1 / 127, dtype=torch.double)
        q = torch.quantize_per_channel(w, scale, torch.zeros(8, dtype=torch.long), 0, torch.qint8)
        out = torch.ops.quantized.linear_dynamic(x, torch.ops.quantized.linear_prepack(q, None), False)
        return bool(torch.allclose(out, x @ w.t(), rtol=1e-3))  # saturated: ~0.5x the exact sums


def quantize_int8_per_channel(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (out, in) as a quantised qint8 tensor: symmetric, one scale per output row
    (max |w| / 127, so nothing clips), round to nearest."""
    w = weight.detach().float().contiguous()
    scale = (w.abs().amax(1) / 127).clamp_min(1e-12).double()  # (out,)
    with warnings.catch_warnings():  # quantized-tensor creation is deprecated; fbgemm's kernels are not
        warnings.simplefilter("ignore")
        return torch.quantize_per_channel(w, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)


class ScreenedArgmax(PreparedCopy):
    """``argmax(process(x @ W^T))`` per row, exact, reading W's int8 copy instead of W.

    The bound. Write W = S Q + E (int8 Q, per-row scales S, rounding error |E| <= S/2) and let fbgemm
    quantise x to x' = x - d (|d_i| <= s_x / 2, s_x = range(x) / 255, or / 127 with 7-bit
    activations; one scale for all the rows of x). It sums the integer products exactly and returns a_j = x' . (S Q)_j, so

        x . w_j - a_j = x . e_j + d . (S Q)_j,   |x . w_j - a_j| <= ||x||_2 ||e_j||_2 + s_x / 2 ||(S Q)_j||_1,

    both norms of W computed once here. We add ``SLACK`` x ||x||_2 ||w_j||_2 for fp32 rounding (of
    fbgemm's scaling and of the fp32 product itself: at most ~3e-5 of that for 512-long sums) and
    widen the whole by ``MARGIN`` in case fbgemm rounds its activation scale differently. Every
    token whose upper bound reaches the largest lower bound is a candidate; the winner among the
    candidates' fp32 scores (x . w_j with the fp32 weights, summed in another order than the full
    product: ~1e-6 relative, the same as the other fast-path matmuls) is returned.

    ``process`` (the logits processors) may only ban tokens (set scores to -inf): it runs on the
    approximate scores, which bans the same tokens. Rows where nothing is a candidate (NaN or inf
    in x) and screens that keep more than ``MAX_FRACTION`` of the vocabulary fall back to the full
    fp32 product. Used only while W is unchanged (same storage, same version counter).
    """

    SLACK = 1e-4
    MARGIN = 1.25
    MAX_FRACTION = 1 / 16

    def __init__(self, weight: torch.Tensor):
        self.weight = weight
        self.versions = stamp(weight)
        self.print = Fingerprint(weight)
        self.reduce_range = not fbgemm_int8_full_range()
        qw = quantize_int8_per_channel(weight)
        q, scale = qw.int_repr(), qw.q_per_channel_scales()
        norms = []
        for rows in torch.arange(weight.shape[0]).split(8192):  # float64 in slices: mT5's 250k rows too
            w = weight.detach()[rows].double()
            sq = q[rows].double() * scale[rows, None]                       # S Q, exactly
            norms.append(torch.stack([(w - sq).norm(dim=1), sq.abs().sum(1), w.norm(dim=1)]).float())
        self.err_l2, self.sq_l1, self.w_l2 = torch.cat(norms, 1)            # (V,) each: ||e_j||_2, ||(S Q)_j||_1, ||w_j||_2
        self.packed = torch.ops.quantized.linear_prepack(qw, None)

    @staticmethod
    def applies(x: torch.Tensor) -> bool:
        """Whether greedy steps on decoder outputs ``x`` may pick their token here: fp32 outputs and no
        autocast. Under ``torch.autocast`` the plain step multiplies in bf16 (other logits, other
        tokens), which the fp32 bound does not cover; the screen also raised there (dtype mismatch)."""
        return x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type)

    @staticmethod
    def available(weight: torch.Tensor) -> bool:
        """A plain fp32 CPU tensor (not a DTensor shard or other subclass) and fbgemm's kernels."""
        return (type(weight) in (torch.Tensor, torch.nn.Parameter) and weight.device.type == "cpu"
                and weight.dtype == torch.float32 and fbgemm_available())

    def current(self, weight: torch.Tensor) -> bool:
        return weight is self.weight and self.versions == stamp(weight)

    def unchanged(self) -> bool:
        """:meth:`current`, and W's values match too (an edit through ``.data``: fingerprint.py)."""
        return self.current(self.weight) and self.print.matches(self.weight)

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """(N, V): the most by which the int8 scores of the rows of ``x`` (N, D) can differ from x @ W^T."""
        levels = 127 if self.reduce_range else 255
        lo, hi = torch.aminmax(x)
        s_x = (hi.clamp_min(0) - lo.clamp_max(0)) / levels  # one scale for the whole x (fbgemm's)
        x_l2 = x.norm(dim=1, keepdim=True)                               # (N, 1)
        b = torch.addcmul(x_l2 * (self.err_l2 + self.SLACK * self.w_l2), self.sq_l1, s_x / 2)
        return b.mul_(self.MARGIN)

    def __call__(self, x: torch.Tensor, process: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Next tokens (N,) for decoder outputs ``x`` (N, D), already rescaled for the output layer."""
        approx = torch.ops.quantized.linear_dynamic(x, self.packed, self.reduce_range)  # (N, V) int8 scores
        if process is not None:
            approx = process(approx)                                                     # bans: -inf
        b = self.bound(x)
        best_low = (approx - b).amax(1, keepdim=True)                                    # (N, 1)
        candidate = approx + b >= best_low                                               # (N, V)
        n_cand = candidate.sum(1)
        if not bool((n_cand > 0).all()) or int(n_cand.sum()) > self.MAX_FRACTION * candidate.numel():
            scores = x @ self.weight.t()
            return (scores if process is None else process(scores)).argmax(1)
        rows, tokens = candidate.nonzero(as_tuple=True)                                  # (P,), (P,)
        if tokens.numel() == x.shape[0]:
            return tokens                                                                # one candidate per row
        exact = torch.bmm(self.weight.index_select(0, tokens).unsqueeze(1), x.index_select(0, rows).unsqueeze(2))
        scores = torch.full_like(approx, -math.inf)
        scores[rows, tokens] = exact.view(-1)                                            # the candidates' fp32 scores
        return scores.argmax(1)
