"""``model.optimize_for_inference(weights="fp32" | "bf16" | "int8")``: inference weights and the
CPU kernels that multiply by them, chosen for the CPU it runs on.

- ``fp32``: the fast path with the same products (T5: :func:`.decoding.optimize_for_decoding`,
  column-major and oneDNN-packed decoder weights). On AVX-512 CPUs every other Linear (ELECTRA,
  T5's encoder) gets oneDNN-packed weights too (:class:`Fp32OneDNN`): PyTorch's fp32 ``F.linear``
  calls MKL, which on the AMD EPYC (AVX-512) of docs/inference.md ran 89-157 GFLOP/s where
  oneDNN's AVX-512 GEMM ran 162-207. Outputs equal the plain model's up to the order of the sums
  (~1e-6 relative), as T5's decoding steps already did.
- ``bf16``: weights rounded to bf16, fp32 accumulation. Without native bf16 (AVX2 CPUs such as the
  AMD EPYC Zen 2 of BENCHMARKS.md) a bf16 matmul is emulated and ~5-100x slower than fp32
  (measured), so the bf16-rounded weights are stored as fp16, which holds every bf16 value of
  magnitude 2^-14..65504 exactly, and multiplied by fbgemm's AVX2 + F16C kernel with fp32
  activations. With native bf16 (AVX512-BF16 / AMX) products of more than 64 rows (encoders,
  ELECTRA, prefill) run with bf16 activations on oneDNN, and up to 64 rows (decoding steps) keep
  the fp16-stored path, faster at a few rows and exact in the activations (:class:`Bf16ByRows`).
  GPUs: bf16 weights and activations.
- ``int8``: int8 weights with one scale per output channel (symmetric), fbgemm's dynamic int8 kernel
  (activations quantised per call to uint8 with one scale per tensor: 8-bit where fbgemm's kernel
  sums without int16 saturation (AVX512-VNNI; probed at run time: :func:`fbgemm_int8_full_range`),
  else 7-bit (``reduce_range``, against AVX2's saturating ``vpmaddubsw``)): 2-3x faster than fp32 on the AVX2 EPYC and 2-8x faster than
  ``aten._weight_int8pack_mm`` with bf16 activations on the AMX Xeon (measured), so it is used on
  both; the weight-only kernel remains where fbgemm is missing (non-x86 builds). With AMX,
  products of more than 64 rows (encoders, ELECTRA) multiply the same int8 weights, dequantised to
  bf16, on AMX instead, 2-4x faster there and without activation quantisation (:class:`Int8ByRows`).
  torch._int_mm (torchao's dynamic int8 path on CPU) measured 30x slower than fp32 on the EPYC.

Measurements: docs/inference.md. Every nn.Linear except the layers named in ``keep`` becomes an
:class:`InferenceLinear` (same class for ``isinstance``, same parameters and state_dict) whose
eval-mode forward without autograd (``torch.no_grad()``, ``inference_mode()``) runs the kernel;
training mode, a forward that autograd records (the kernels have no backward), changed weights
(training, loading) or a copy of the model run the plain fp32 ``F.linear`` (weights and copies:
the same rule as :class:`.decoding.PackedLinears`). T5's
decoding steps reach the same kernels through the ``linear`` hook (:class:`KernelTable`).
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from ..machine import amx_bf16, describe_cpu, native_bf16, onednn_fp32_preferred
from .fingerprint import Fingerprint, PreparedCopy, all_match, stamp
from .decoding import PackedLinears, bf16_packing_available, decode_linear, optimize_for_decoding
from .int8 import ScreenedArgmax, fbgemm_available, fbgemm_int8_full_range, quantize_int8_per_channel

logger = logging.getLogger("t5electra")

WEIGHTS = ("fp32", "bf16", "int8")
# Layers kept in fp32 by default, per weight type (regular expressions on module names; measured in
# docs/inference.md). "lm_head" also names T5's tied output layer (the shared embedding matrix).
DEFAULT_KEEP: dict[str, tuple[str, ...]] = {"fp32": (), "bf16": (), "int8": ()}


# ------------------------------------------------------------------------------------------------
# Kernels: one prepared weight matrix each; ``kernel(x)`` = F.linear(x, weight, bias) approximately
# ------------------------------------------------------------------------------------------------
class Kernel(PreparedCopy, abc.ABC):
    """A weight matrix prepared for one kernel; used only while the weight is unchanged."""

    name = "?"
    accepts_bf16 = False  # whether bf16 inputs (a fused bf16 activation) go in as they are

    @classmethod
    def describe(cls) -> str:
        """What the kernel does on this CPU (the inference report's text)."""
        return cls.name

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.versions = (stamp(weight), None if bias is None else stamp(bias))
        self.has_bias = bias is not None
        self.prints = (Fingerprint(weight, every_row=False), None if bias is None else Fingerprint(bias))

    def current(self, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
        """Same storage and version counters (every call: cheap)."""
        return self.versions == (stamp(weight), None if bias is None else stamp(bias))

    def unchanged(self, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
        """:meth:`current`, and the values match too (an edit through ``.data``: fingerprint.py)."""
        return (self.current(weight, bias) and self.prints[0].matches(weight)
                and (bias is None or self.prints[1].matches(bias)))

    def fuses(self, x: torch.Tensor) -> bool:
        """Whether ``self(x, post)`` can apply an activation inside the GEMM for this input."""
        return False

    @abc.abstractmethod
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, weight, bias)`` through this kernel (every subclass defines it)."""


class Fp16Fbgemm(Kernel):
    """bf16-rounded weights stored as fp16, fbgemm's AVX2/F16C GEMM with fp32 activations/accumulation."""

    name = "bf16 weights (stored as fp16), fp32 activations: fbgemm linear_dynamic_fp16 (AVX2+F16C)"

    def __init__(self, weight, bias):
        super().__init__(weight, bias)
        w = weight.detach().to(torch.bfloat16).float().contiguous()  # the bf16 values, exact in fp16
        self.packed = torch.ops.quantized.linear_prepack_fp16(w, None if bias is None else bias.detach().float())

    def __call__(self, x):
        return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)


class Int8Fbgemm(Kernel):
    """int8 weights, one scale per output channel; activations quantised per call (fbgemm dynamic) to
    8 bits where the CPU sums without saturation, else 7 (:func:`fbgemm_int8_full_range`)."""

    @classmethod
    def describe(cls) -> str:
        bits = "8-bit uint8 (VNNI, no int16 saturation)" if fbgemm_int8_full_range() else "7-bit uint8"
        return f"int8 weights (per-channel scales), activations quantised per call to {bits}: fbgemm linear_dynamic"

    def __init__(self, weight, bias, qweight: torch.Tensor | None = None):
        """``qweight``: ``quantize_int8_per_channel(weight)`` where the caller has it already."""
        super().__init__(weight, bias)
        self.reduce_range = not fbgemm_int8_full_range()
        qweight = quantize_int8_per_channel(weight) if qweight is None else qweight
        self.packed = torch.ops.quantized.linear_prepack(qweight, None if bias is None else bias.detach().float())

    def __call__(self, x):
        return torch.ops.quantized.linear_dynamic(x, self.packed, self.reduce_range)


class Bf16Native(Kernel):
    """bf16 weights and activations, fp32 accumulation; fp32 output. For native-bf16 CPUs and GPUs.

    On CPU the bf16 weights are packed once for oneDNN (as :class:`Fp32OneDNN`; the same values as
    ``F.linear`` in bf16, which reorders them at every call) and an activation can run inside the
    GEMM (``post``, :meth:`InferenceLinear.fused_forward`): its output then stays bf16 (the values
    the next bf16 product would round it to anyway), so ELECTRA's (rows, d_ff) activations are
    neither widened to fp32, nor passed over for the GELU, nor rounded back (docs/inference.md)."""

    name = "bf16 weights and activations, fp32 accumulation: F.linear in bf16 (oneDNN / cuBLAS)"
    accepts_bf16 = True

    def __init__(self, weight, bias):
        super().__init__(weight, bias)
        self._prepare(weight, bias)

    def _prepare(self, weight, bias) -> None:
        """The bf16 copy (packed for oneDNN where it can) of ``weight`` and ``bias``."""
        w = weight.detach().to(torch.bfloat16).contiguous()
        self.bias = None if bias is None else bias.detach().to(torch.bfloat16)
        packable = weight.device.type == "cpu" and bf16_packing_available()  # else F.linear in bf16
        self.packed = torch.ops.mkldnn._reorder_linear_weight(w, 1) if packable else None
        self.weight = None if packable else w  # one copy: the packed one, or the plain one for F.linear

    def fuses(self, x):
        return self.packed is not None

    def __call__(self, x, post: tuple[str, str] | None = None):
        """``post``: an activation inside the GEMM (oneDNN's post-op name and algorithm; CPU only);
        the result is then bf16. Without it, fp32."""
        x = x.to(torch.bfloat16)
        if self.packed is None:
            return F.linear(x, self.weight, self.bias).float()
        op, algorithm = post or ("none", "")
        out = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, op, [], algorithm)
        return out if post is not None else out.float()


class Int8WeightOnly(Kernel):
    """int8 weights (per-channel scales) dequantised inside the kernel, bf16 activations:
    ``aten._weight_int8pack_mm``. For native-bf16 CPUs."""

    name = "int8 weights (per-channel scales), bf16 activations: aten._weight_int8pack_mm"

    def __init__(self, weight, bias):
        super().__init__(weight, bias)
        w = weight.detach().float()
        scale = (w.abs().amax(1) / 127).clamp_min(1e-12)  # (out,)
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        # torch 2.13's AVX-512 kernel reads past the end of rows whose length is not a multiple of
        # 16 (segfaults measured at in_features 8, 24, 40, 100, 120 with 2+ rows of x on an AVX-512
        # Xeon; 16, 32, 48, 128, 512, 1008 run): zero columns pad the weight, x is padded to match.
        self.pad = -q.shape[1] % 16
        self.qweight = F.pad(q, (0, self.pad)).contiguous()  # (out, in + pad)
        self.scale = scale.to(torch.bfloat16)
        self.bias = None if bias is None else bias.detach().float()

    def __call__(self, x):
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)  # (rows, in)
        if self.pad:
            x = F.pad(x, (0, self.pad))
        out = torch.ops.aten._weight_int8pack_mm(x, self.qweight, self.scale).float().view(*lead, self.qweight.shape[0])
        return out if self.bias is None else out + self.bias


class _ByRows(Kernel):
    """Two kernels of one weight, chosen by the number of rows of x: ``small`` (fp32 inputs) up to
    ``SMALL`` rows, ``large`` above, where an activation may also run inside the GEMM (``post``)."""

    SMALL = 64
    accepts_bf16 = True
    small: Kernel
    large: Kernel

    def __call__(self, x, post: tuple[str, str] | None = None):
        """``post`` (an activation inside the GEMM, bf16 result) only where the rows take ``large``."""
        if x.numel() // x.shape[-1] > self.SMALL:
            return self.large(x) if post is None else self.large(x, post)
        if post is not None:
            raise ValueError(f"{type(self).__name__}: no activation inside the few-rows kernel (check fuses() first)")
        return self.small(x.float())

    def fuses(self, x):
        return x.numel() // x.shape[-1] > self.SMALL and self.large.fuses(x)


class Bf16ByRows(_ByRows):
    """bf16 weights on a native-bf16 CPU, by the number of rows of x: up to ``SMALL`` rows (T5's
    decoding steps up to 64 sequences x beams) the fp16-stored weights with fp32 activations
    (:class:`Fp16Fbgemm`), more rows (encoders, ELECTRA, prefill) bf16 activations on oneDNN's
    AVX512-BF16/AMX kernels (:class:`Bf16Native`).

    Why 64 (docs/inference.md): quality. Rounding the activations of every decoding step to bf16
    flipped greedy choices: on the AVX-512 EPYC (no AMX) with the split at 4 rows, a quickstart T5
    kept 97.1 % of its span-filling tokens and moved 3 of 400 sentiment answers; with the split at
    64, 99.7 % and none, while the encoders keep bf16 activations. Speed: at 1-8 rows the
    fp16-stored path is the faster one on both CPUs measured (EPYC, 2 threads, T5-small's output
    layer: 1.55 vs 3.18 ms at 4 rows); from 16 to 64 rows bf16 activations are 1.0-1.8x faster
    (EPYC; AMX Xeon 16 rows 9.9 vs 7.5 ms), a price paid only by batched decoding; from 128 rows,
    where bf16 activations win 2x, they run.
    Both copies are kept: the kernel memory is that of the fp32 weights."""

    name = ("bf16 weights: <= 64 rows (decoding steps) as fp16 with fp32 activations (fbgemm), more rows "
            "with bf16 activations (oneDNN AVX512-BF16/AMX), fp32 accumulation")

    def __init__(self, weight, bias):
        super().__init__(weight, bias)
        self.small, self.large = Fp16Fbgemm(weight, bias), Bf16Native(weight, bias)


class Int8AsBf16(Bf16Native):
    """int8 weights (the same per-channel values as :class:`Int8Fbgemm`) multiplied in bf16: the
    dequantised weight ``q * scale`` rounded to bf16 (within 2^-9 of it, as any bf16 value) goes
    through :class:`Bf16Native`'s kernel, so oneDNN's bf16 GEMM (AMX) multiplies it with bf16
    activations and fp32 accumulation, the bias and an activation (an FFN's GELU) inside the GEMM:
    weight-only int8 without activation quantisation, at the speed of the bf16 weights."""

    name = ("int8 weights (per-channel scales), dequantised to bf16, bf16 activations, fp32 accumulation: "
            "oneDNN")

    def __init__(self, weight, bias, qweight: torch.Tensor | None = None):
        """``qweight``: ``quantize_int8_per_channel(weight)`` where the caller has it already."""
        Kernel.__init__(self, weight, bias)  # stale when the model's weight changes
        qweight = quantize_int8_per_channel(weight) if qweight is None else qweight
        self._prepare(qweight.dequantize(), bias)


class Int8ByRows(_ByRows):
    """int8 weights on a CPU with AMX, by the number of rows of x: up to ``SMALL`` rows (T5's
    decoding steps) fbgemm's dynamic int8 (:class:`Int8Fbgemm`: reading 1 byte a weight is what a
    decoding step needs), more rows (encoders, ELECTRA, prefill) the same int8 weights, dequantised
    to bf16, multiplied on AMX with an FFN's activation inside the GEMM (:class:`Int8AsBf16`).

    Why (docs/inference.md, session 18, AMX Xeon, 2 threads): at 2,048 x 512 -> 2,048 fbgemm's int8
    took 3.75 ms where the bf16 GEMM takes 1.58, at 1,792 x 256 -> 768 0.87 against 0.20; at 64 rows
    the two are even (0.146 / 0.127 ms) and at 16 rows int8 is faster (0.051 / 0.069). And the
    encoders lose their activation quantisation: fbgemm's one scale per call (set by the largest
    activation of the whole batch) moved a quickstart T5's sentiment accuracy by -0.66 point on
    the test split. Without AMX (AVX512-BF16 alone, AVX2) fbgemm's int8 stays the faster one.
    Dequantised rather than the int8 values times a scale pass (session 18's first version): the
    bias and GELU then run inside the GEMM as in ``bf16`` mode (session 19). Both weight copies are
    kept (1 + 2 bytes a weight)."""

    @classmethod
    def describe(cls) -> str:
        return (f"int8 weights (per-channel scales): <= {cls.SMALL} rows (decoding steps) {Int8Fbgemm.describe()}; "
                f"more rows the int8 weights dequantised to bf16 on AMX (oneDNN), bf16 activations, fp32 accumulation")

    def __init__(self, weight, bias):
        super().__init__(weight, bias)
        qweight = quantize_int8_per_channel(weight)  # one quantisation, both kernels
        self.small, self.large = Int8Fbgemm(weight, bias, qweight), Int8AsBf16(weight, bias, qweight)


class Fp32OneDNN(Kernel):
    """fp32 weights packed once in oneDNN's blocked layout (``mkldnn._reorder_linear_weight``, what
    torch.compile's CPU backend does with frozen weights) and multiplied by oneDNN's GEMM, bias
    added inside it: the same products as ``F.linear`` in another summation order."""

    name = "fp32 weights packed for oneDNN's AVX-512 GEMM"

    def __init__(self, weight, bias):
        super().__init__(weight, bias)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), 1)
        self.bias = None if bias is None else bias.detach()

    @staticmethod
    def preferred(flags: frozenset[str] | None = None) -> bool:
        """Whether fp32 Linear layers should run on oneDNN here (``machine.onednn_fp32_preferred``:
        AVX-512 CPUs, where its fp32 GEMM beat MKL's 1.15-1.8x on the AMD EPYC of docs/inference.md)."""
        return onednn_fp32_preferred(flags) and PackedLinears.available()

    def fuses(self, x):
        return True

    def __call__(self, x, post: tuple[str, str] = ("none", "")):
        """``post``: an activation applied inside the GEMM (oneDNN's post-op name and algorithm)."""
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, post[0], [], post[1])


def choose_kernel(weights: str, device: torch.device | str = "cpu",
                  flags: frozenset[str] | None = None) -> type[Kernel]:
    """The kernel class for ``weights`` ('bf16' or 'int8') on this device / CPU (see the module docstring)."""
    on_cpu = torch.device(device).type == "cpu"
    native = native_bf16(flags) or not on_cpu
    if weights == "bf16":
        if on_cpu and fbgemm_available():
            return Bf16ByRows if native else Fp16Fbgemm
        return Bf16Native
    if not on_cpu:
        raise InvalidInputError(f"weights='int8' runs on CPU only (the model is on {device}); use 'bf16' there")
    # fbgemm's dynamic int8 wins on AVX2 and on AVX-512 (measured: 2.5x faster than
    # _weight_int8pack_mm with bf16 activations at 1 row, 6x at 16, 5x at 4096; docs/inference.md);
    # with AMX, products of more than 64 rows run the int8 values in bf16 (Int8ByRows)
    if not fbgemm_available():
        return Int8WeightOnly
    return Int8ByRows if amx_bf16(flags) else Int8Fbgemm


# ------------------------------------------------------------------------------------------------
# Modules and the decoding hook
# ------------------------------------------------------------------------------------------------
class InferenceLinear(nn.Linear):
    """An nn.Linear (same parameters, state_dict, isinstance) whose eval-mode CPU forward on fp32
    inputs without autograd runs its prepared :class:`Kernel`; otherwise (training, a gradient to
    compute, changed weights, a copy) F.linear."""

    kernel: Kernel | None = None

    @property
    def bf16_inputs(self) -> bool:
        """Whether bf16 inputs go to the kernel as they are (``nn.linear.project`` widens them otherwise)."""
        return self.kernel is not None and self.kernel.accepts_bf16

    def _usable_kernel(self, x: torch.Tensor) -> Kernel | None:
        k = self.kernel
        if k is None or self.training or self._needs_grad(x):
            return None
        if not k.current(self.weight, self.bias):
            # changed weights (training, loading): the kernel would compute with the old ones. Plain
            # fp32 from now on, until optimize_for_inference is called again; a stale kernel never
            # becomes current again, so its copy is freed. (Edits through .data: drop_stale_copies.)
            self.kernel = None
            return None
        return k if x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and k.accepts_bf16) else None

    def _needs_grad(self, x: torch.Tensor) -> bool:
        """Whether autograd records this call: the kernels have no backward (a loss computed through
        them gave no gradients at all, silently), so such a call runs the plain ``F.linear``. Under
        ``torch.no_grad()`` / ``inference_mode()`` (generate, the pipelines, the server) or with frozen
        weights and an input without grad, the kernel runs."""
        return torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad
                                            or (self.bias is not None and self.bias.requires_grad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self._usable_kernel(x)
        if k is not None:
            return k(x)
        # a bf16 activation from a fused bf16 kernel (fused_forward) into a layer without one
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias)

    def fused_forward(self, x: torch.Tensor, post: tuple[str, str]) -> torch.Tensor | None:
        """``act(self(x))`` with the activation inside the GEMM where the kernel can
        (``nn.linear.project_act``): fp32 oneDNN (fp32 result), bf16 oneDNN (bf16 result, see
        :class:`Bf16Native`); None where it cannot (the caller then applies it)."""
        k = self._usable_kernel(x)
        return k(x, post) if k is not None and k.fuses(x) else None


class KernelTable(PreparedCopy):
    """The ``linear(x, weight)`` hook of T5's decoding steps (nn/linear.py): the prepared kernel of
    ``weight`` where there is a current one (no bias: the hook adds it), else ``fallback``
    (the fp32 fast path: :class:`.decoding.PackedLinears` or :func:`.decoding.decode_linear`)."""

    def __init__(self, kernels: dict[int, tuple[torch.Tensor, Kernel]], fallback=None):
        self.kernels = kernels  # id(weight) -> (weight, kernel)
        self.fallback = fallback or decode_linear

    def __call__(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        entry = self.kernels.get(id(weight))
        if (entry is not None and entry[0] is weight and not entry[1].has_bias and x.dtype == torch.float32
                and entry[1].current(weight, None)):
            return entry[1](x)
        return self.fallback(x, weight)

    def drop_changed(self) -> int:
        """Forget the kernels (and the fallback's packed copies) whose weight changed; returns how
        many had changed behind the version counter (edited through ``.data``)."""
        behind = 0
        if not all_match([k.prints[0] for _, k in self.kernels.values()]):
            for key, (w, k) in list(self.kernels.items()):
                if not k.unchanged(w, None):
                    behind += k.current(w, None)
                    del self.kernels[key]
        return behind + (self.fallback.drop_changed() if isinstance(self.fallback, PackedLinears) else 0)


@dataclasses.dataclass
class InferenceReport:
    """What :func:`optimize_for_inference` chose: ``model.inference_report`` (also logged)."""

    weights: str                 # fp32 | bf16 | int8
    kernel: str                  # the kernel's description
    cpu: str                     # the deciding CPU flags (describe_cpu)
    layers: int                  # nn.Linear layers (and tied output matrices) running the kernel
    kept_fp32: list[str]         # layers left in fp32 (``keep``)
    note: str = ""               # what runs besides the kernel (T5's greedy screen), after the layer count

    def __str__(self) -> str:
        kept = f"; kept in fp32: {', '.join(self.kept_fp32)}" if self.kept_fp32 else ""
        where = f" on {self.layers} layers" if self.layers else ""  # fp32: no layer changes kernel
        return f"weights={self.weights}: {self.kernel}{where}{self.note} [CPU: {self.cpu}]{kept}"


def drop_stale_copies(model: nn.Module, *, steps: bool = True) -> int:
    """Forget the prepared copies whose weight was edited through ``.data`` (which leaves the
    version counter as it was; fingerprint.py): the optimised layers' kernels and, with ``steps``,
    the decoding steps' (the int8 screen of T5's output layer, the packed and bf16/int8 kernels).
    Those layers and steps then run the plain fp32 product on the current weights; the screen is
    rebuilt from them. T5's ``new_decoder_cache`` calls this (every decoding, ``generate`` the
    function's too); before each forward of a model prepared
    by :func:`optimize_for_inference` its submodules check their own layers (:func:`_watch`).
    Returns how many were dropped."""
    dropped = _drop_stale_layers(getattr(model, "_inference_layers", ()))
    if steps:
        screen = getattr(model, "_screened_argmax", None)
        if screen is not None and not screen.unchanged():
            model._screened_argmax = None  # rebuilt from the current weights by the next greedy step
            dropped += screen.current(screen.weight)
        table = getattr(model, "_packed_linears", None)
        if isinstance(table, (KernelTable, PackedLinears)):
            dropped += table.drop_changed()
    if dropped:
        _warn_stale(dropped)
    return dropped


def _drop_stale_layers(layers: Sequence[nn.Module]) -> int:
    """The layers' part of :func:`drop_stale_copies`: one comparison for all of them, then a look at
    each only when something changed. Returns how many had changed behind the version counter."""
    layers = [m for m in layers if getattr(m, "kernel", None) is not None]  # not dropped nor restored since
    dropped = 0
    if not all_match([fp for m in layers for fp in m.kernel.prints if fp is not None]):
        for m in layers:
            if not m.kernel.unchanged(m.weight, m.bias):
                dropped += m.kernel.current(m.weight, m.bias)
                m.kernel = None
    return dropped


def _check_before_forward(module: nn.Module, args) -> None:
    """The forward pre-hook of a prepared model's submodules (:func:`_watch`)."""
    if not module.training:
        dropped = _drop_stale_layers(module._watched_layers)
        if dropped:
            _warn_stale(dropped)


def _warn_stale(n: int) -> None:
    logger.warning("%d prepared cop%s of weights no longer matched them (changed in place without a version "
                   "bump: through .data, or by torch's fused AdamW in a loop of your own) and %s dropped: "
                   "those layers run the plain fp32 product until optimize_for_inference is called again",
                   n, "y" if n == 1 else "ies", "was" if n == 1 else "were")


def _restore(model: nn.Module) -> None:
    """Undo an earlier bf16/int8 call: plain nn.Linear modules and no decoding kernels."""
    for m in model.modules():
        if type(m) is InferenceLinear:
            m.__class__ = nn.Linear
            m.__dict__.pop("kernel", None)
        for key, hook in list(m._forward_pre_hooks.items()):
            if hook is _check_before_forward:
                del m._forward_pre_hooks[key]
        m.__dict__.pop("_watched_layers", None)
    if isinstance(getattr(model, "_packed_linears", None), KernelTable):
        model._packed_linears = None
    model._inference_layers = []


def _watch(model: nn.Module, layers: list[InferenceLinear]) -> None:
    """Check the prepared layers' weights (:func:`drop_stale_copies`) before each forward of the
    model's direct submodules that hold them, each its own layers: T5's encoder and decoder stacks,
    ELECTRA's ``electra`` body and its head. The model's forward runs through them, and so do the
    calls users make of them directly (``model.get_encoder()(...)``, ``model.electra(ids)``), which
    a check on the model alone missed (stale kernels after whole-matrix edits through ``.data``).
    Each layer is checked once a forward; ``model._inference_layers`` (all of them) is what T5's
    ``generate`` checks."""
    model._inference_layers = layers
    watched = {id(m) for m in layers}
    for child in model.children():
        group = [m for m in child.modules() if id(m) in watched]
        if group:
            child._watched_layers = group
            child.register_forward_pre_hook(_check_before_forward)


def _is_t5_generator(model: nn.Module) -> bool:
    return hasattr(model, "new_decoder_cache") and hasattr(model, "decoder")


def _pack_fp32_linears(model: nn.Module, patterns: list[re.Pattern], device: torch.device) -> tuple[int, list[str]]:
    """fp32: :class:`Fp32OneDNN` on every nn.Linear not named in ``keep`` and not one of T5's
    decoding-step matrices or its output layer, where :meth:`Fp32OneDNN.preferred`. Returns (layers, kept names)."""
    if device.type != "cpu" or not Fp32OneDNN.preferred():
        return 0, []
    stepped = set()  # matrices the decoding hook multiplies by (decoding.optimize_for_decoding packs them)
    if _is_t5_generator(model):
        stepped = {id(m.weight) for m in model.decoder.step_linears()}
        stepped.add(id((model.shared if model.lm_head is None else model.lm_head).weight))
    swapped, kept = _swap_linears(model, patterns, Fp32OneDNN,
                                  skip=lambda m: id(m.weight) in stepped or m.weight.dtype != torch.float32)
    _watch(model, swapped)
    return len(swapped), kept


def _swap_linears(model: nn.Module, patterns: list[re.Pattern], kernel_cls: type[Kernel],
                  skip=lambda m: False) -> tuple[list[InferenceLinear], list[str]]:
    """Every plain nn.Linear not ``skip``-ped becomes an :class:`InferenceLinear` running
    ``kernel_cls``, except those named in ``keep`` (``patterns``). Returns (swapped, kept names)."""
    swapped, kept = [], []
    adapters = 0
    for name, m in model.named_modules():
        if type(m) is not nn.Linear or skip(m):
            continue
        if _LORA_MATRIX.search(name):  # an unmerged adapter's A / B: trained in fp32, r-wide, cheap; kept
            adapters += 1
            continue
        if any(p.search(name) for p in patterns):
            kept.append(name)
            continue
        m.kernel = kernel_cls(m.weight, m.bias)
        m.__class__ = InferenceLinear
        swapped.append(m)
    if adapters:
        kept.append(f"{adapters} LoRA adapter matrices (unmerged; merge_and_unload() first to run them inside "
                    f"the base weights)")
    return swapped, kept


# the A / B matrices of a LoRA adapter (ours and PEFT's: base.lora_A.<adapter name>)
_LORA_MATRIX = re.compile(r"(^|\.)lora_[AB](\.|$)")


def _require_fp32(model: nn.Module, weights: str) -> None:
    """bf16 / int8 kernels are made from fp32 weights and take fp32 activations (the norms, embeddings
    and attention stay in the model's dtype): a bf16 or fp16 model's forward failed on mixed dtypes
    (oneDNN, layer_norm). Refused here, before any change, with what to do instead."""
    other = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()
                    if p.is_floating_point() and p.dtype != torch.float32})
    if other:
        raise InvalidInputError(f"the model is {' and '.join(other)}: optimize_for_inference({weights!r}) takes an "
                                f"fp32 model; call .float() first (or optimize_for_inference('fp32') keeps its dtype)")


def _keep_patterns(keep: str | Sequence[str]) -> list[re.Pattern]:
    """``keep`` compiled: one pattern, or several (a str is one: iterated, ``keep="lm_head"`` was
    read as the patterns "l", "m", "_", ... and kept every layer with one of those letters)."""
    patterns = []
    for p in [keep] if isinstance(keep, str) else keep:
        try:
            patterns.append(re.compile(p))
        except (re.error, TypeError) as e:
            raise InvalidInputError(f"keep: {p!r} is not a regular expression on module names ({e})") from None
    return patterns


@torch.no_grad()
def optimize_for_inference(model: nn.Module, weights: str = "fp32", *, keep: str | Sequence[str] | None = None,
                           pack_weights: bool = True) -> nn.Module:
    """See the module docstring. ``keep``: a regular expression on module names (``re.search``), or
    a list of them, for the layers left in fp32 (default :data:`DEFAULT_KEEP`; T5's tied output
    layer is called ``lm_head``). The kernels run in eval mode (``from_pretrained``'s) without
    autograd; ``model.inference_report`` says what was chosen. Returns the model."""
    if weights not in WEIGHTS:
        raise InvalidInputError(f"weights={weights!r}: expected one of {', '.join(WEIGHTS)}")
    if not isinstance(pack_weights, bool):
        raise InvalidInputError(f"pack_weights must be True or False, got {pack_weights!r}")
    device = next(model.parameters()).device
    if weights != "fp32":
        _require_fp32(model, weights)
    kernel_cls = None if weights == "fp32" else choose_kernel(weights, device)  # errors before any change
    patterns = _keep_patterns(DEFAULT_KEEP[weights] if keep is None else keep)
    _restore(model)
    t5 = _is_t5_generator(model)
    screen_note = ""
    if t5:
        optimize_for_decoding(model, pack_weights)  # the fp32 fast path, also for the layers kept in fp32
        lm = model.shared if model.lm_head is None else model.lm_head
        lm_in_fp32 = kernel_cls is None or any(p.search("lm_head") for p in patterns)
        screen = (lm_in_fp32 and (model.lm_head is None or type(model.lm_head) is nn.Linear)
                  and ScreenedArgmax.available(lm.weight))
        model._screened_argmax = ScreenedArgmax(lm.weight) if screen else None  # greedy steps, fp32 output layer
        model.screen_greedy_argmax = lm_in_fp32  # later rebuilds (new weights) only for an fp32 output layer
        if screen:
            screen_note = "; greedy argmax screened by an int8 copy of the fp32 output layer (exact)"
    if kernel_cls is None:
        # The decoder's step matrices are packed already (PackedLinears, the decoding hook); every
        # other Linear gets its own packed copy where oneDNN's fp32 GEMM is the faster one.
        layers, kept = _pack_fp32_linears(model, patterns, device) if pack_weights else (0, [])
        layout = "column-major" if getattr(model, "_column_major", True) else "row-major (MKL's one-row product)"
        name = (f"{layout} + oneDNN-packed decoder weights" if t5 and model._packed_linears is not None
                else f"{layout} decoder weights" if t5 else "")
        if layers:
            name += f"; other layers: {Fp32OneDNN.name}" if t5 else Fp32OneDNN.name
        name = name or "plain modules"
        model.inference_report = InferenceReport("fp32", name + " (the same products)", describe_cpu(), layers, kept,
                                                 screen_note)
        return model

    swapped, kept = _swap_linears(model, patterns, kernel_cls)
    _watch(model, swapped)
    kernels: dict[int, tuple[torch.Tensor, Kernel]] = {id(m.weight): (m.weight, m.kernel) for m in swapped}
    if t5 and model.lm_head is None:  # the tied output layer: the embedding matrix
        if any(p.search("lm_head") for p in patterns):
            kept.append("lm_head (tied)")
        else:
            kernels[id(model.shared.weight)] = (model.shared.weight, kernel_cls(model.shared.weight, None))
    if t5:
        packed = model._packed_linears
        for key in kernels if packed is not None else ():
            packed.packs.pop(key, None)  # no fp32 packed copy of a matrix that runs in bf16/int8
        model._packed_linears = KernelTable(kernels, packed)
    model.inference_report = InferenceReport(weights, kernel_cls.describe(), describe_cpu(), len(kernels), kept,
                                             screen_note)
    if model.training:
        logger.warning("optimize_for_inference: the model is in training mode; the %s kernels run after "
                       "model.eval()", weights)
    if kernel_cls in (Fp16Fbgemm, Int8Fbgemm):
        logger.info("this CPU has no native bf16 (%s): %s", describe_cpu(), model.inference_report)
    else:
        logger.info("%s", model.inference_report)
    return model
