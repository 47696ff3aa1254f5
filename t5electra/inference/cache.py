"""The T5 decoder's KV cache (the generation protocol's ``cache``; see models/t5.py).

``reorder`` (beam search) copies as little as it can. The rows of the cache are *slots*: logical
row j (what ``decode_step`` takes and returns) lives in slot ``slot[j]``, and the decoder runs on
the slots (``T5Stack.decode`` permutes its input and output rows, a few KB). When beam search
keeps a beam, its first continuation stays in its slot whatever its rank; only a forked beam's
extra continuations are copied, into the slots of beams that ended in the same input. Most beam
search steps then move a small fraction of the rows (T5-small, 16 inputs x 4 beams: the old gather
rewrote every row of every position each step, ~5 ms of a 36 ms int8 step). Other reorders
(inputs leaving, rows changing input) gather the decoded positions into a spare buffer that then
becomes the cache (one copy, no allocation per step), and the encoder K/V stay shared by the beams
of an input.
"""

from __future__ import annotations

import dataclasses

import torch

from ..errors import InvalidInputError


MAX_POSITION_BIAS_BYTES = 2 << 30  # 2 GiB: 8,192 tokens of a t5-small decoder (8 heads, fp32)


def check_position_bias_size(max_length: int, tables: int, element_size: int) -> None:
    """The decoder's position bias is built whole for ``max_length`` positions, ``tables`` (H, M, M)
    of them: refuse a size no step check could stop (20,001 tokens: ~10 GB)."""
    bias_bytes = tables * max_length ** 2 * element_size
    if bias_bytes > MAX_POSITION_BIAS_BYTES:
        longest = int((MAX_POSITION_BIAS_BYTES / (tables * element_size)) ** 0.5)
        raise InvalidInputError(
            f"max_length={max_length}: the decoder's position bias alone would take {bias_bytes / 2**30:.1f} GiB "
            f"({max_length}^2 per head); generate at most {longest} tokens at a time")


@dataclasses.dataclass
class T5DecoderCache:
    """State of incremental decoding; see the generation protocol in the module docstring."""

    self_kv: torch.Tensor  # (L, 2, N, H, max_length, Dh) keys/values of positions 0..length-1
    cross_kv: torch.Tensor  # (L, 2, N_src, H, S, Dh) encoder keys/values, N = N_src * g
    cross_bias: torch.Tensor | None  # (N_src, 1, 1, S) additive encoder padding mask
    position_bias: torch.Tensor  # (L, 1, H, max_length, max_length) relative bias + causal mask, per layer
    source_index: torch.Tensor  # (N,) row of cross_kv each decoder row reads
    length: int = 0  # positions decoded so far
    # A second self-attention buffer of the same shape: ``reorder`` gathers the rows into it and
    # swaps, instead of gathering into a temporary and copying back (one copy instead of two, and
    # no allocation per beam-search step). Allocated on the first same-size reorder.
    spare_kv: torch.Tensor | None = None
    # Slot (row of self_kv) of each logical row, and its inverse; None means the identity.
    slot: torch.Tensor | None = None
    slot_owner: torch.Tensor | None = None
    # (stack, linear, plan) of the flat decoder step (inference/decoder_step.py), made at the cache's
    # first step by that stack; plan None: the steps take the modules
    flat_step: tuple | None = None

    def __getstate__(self) -> dict:
        """Copies and pickles leave ``flat_step`` out: it refers to the model's modules and weights,
        which a deep copy of the cache copied whole and a pickle saved; the next step plans again."""
        return {**self.__dict__, "flat_step": None}

    def to_slots(self, x: torch.Tensor) -> torch.Tensor:
        """Logical rows (N, ...) -> slot order: row p of the result is logical row slot_owner[p]."""
        return x if self.slot is None else x.index_select(0, self.slot_owner)

    def from_slots(self, x: torch.Tensor) -> torch.Tensor:
        """Slot order (N, ...) -> logical rows."""
        return x if self.slot is None else x.index_select(0, self.slot)

    @property
    def max_length(self) -> int:
        return self.self_kv.shape[4]

    @property
    def batch_size(self) -> int:
        return self.self_kv.shape[2]

    @torch.no_grad()
    def reorder(self, index: torch.Tensor) -> None:
        """Keep / duplicate rows in place: row j becomes old row index[j] (beam search)."""
        index = torch.as_tensor(index, device=self.self_kv.device)
        if index.ndim != 1 or index.dtype not in (torch.int64, torch.int32) or index.numel() == 0:
            raise InvalidInputError(f"cache.reorder expects a non-empty 1-D integer index, got "
                                    f"{tuple(index.shape)} {index.dtype}")
        lo, hi = torch.aminmax(index)
        n_old, n_new = self.batch_size, index.numel()
        if lo.item() < 0 or hi.item() >= n_old:
            raise InvalidInputError(f"cache.reorder index values must be in [0, {n_old}), got "
                                    f"[{lo.item()}, {hi.item()}]")
        index = index.long()
        if n_new == n_old and self._move_within_inputs(index):
            return
        # (Same size and not within inputs: some row moves to another input's slot, so not the identity.)
        rows = index if self.slot is None else self.slot[index]  # the slot each new row continues
        self.slot = self.slot_owner = None
        # Self-attention K/V: only the decoded positions need moving, gathered straight into the
        # other buffer (a strided ``out=`` view), which then becomes the cache.
        if n_new == n_old and self.spare_kv is not None:
            target = self.spare_kv
        else:
            target = self.self_kv.new_empty(self.self_kv.shape[:2] + (n_new,) + self.self_kv.shape[3:])
        pos = slice(0, self.length)
        torch.index_select(self.self_kv[:, :, :, :, pos], 2, rows, out=target[:, :, :, :, pos])
        self.spare_kv = self.self_kv if n_new == n_old else None
        self.self_kv = target
        # Encoder K/V: shared while the decoder rows come in groups of g consecutive rows that read
        # the same source (the g beams of an input). When beam search drops finished inputs, the
        # sources still in use are selected once (a small copy) and the sharing goes on.
        src = self.source_index[rows]                         # (n_new,) source row of each decoder row
        g = int((src == src[0]).cumprod(0).sum())            # length of the first run of one source
        first = src[::g]                                      # (n_new / g,) the source of each group
        if n_new % g == 0 and torch.equal(src, first.repeat_interleave(g)):
            self.source_index = torch.arange(first.numel(), device=src.device).repeat_interleave(g)
            if torch.equal(first, torch.arange(self.cross_kv.shape[2], device=src.device)):
                return  # the same sources in the same order: nothing to copy
            sources = first
        else:  # rows of different sources interleaved: one K/V row per decoder row
            sources, self.source_index = src, torch.arange(n_new, device=src.device)
        self.cross_kv = self.cross_kv.index_select(2, sources)
        if self.cross_bias is not None:
            self.cross_bias = self.cross_bias.index_select(0, sources)

    def _move_within_inputs(self, index: torch.Tensor) -> bool:
        """A same-size reorder through the slot map: new row j continues slot ``slot[index[j]]``;
        the first row to continue a slot keeps it, each further one is copied into a free slot of
        the same source (the slot of a beam no row continues). False, with nothing changed, where
        a row would need a slot of another source (then ``reorder`` gathers every row)."""
        n = index.numel()
        parents = (index if self.slot is None else self.slot[index]).tolist()
        source = self.source_index.tolist()  # source of each slot
        new_slot = [-1] * n
        taken = [False] * n
        for j, p in enumerate(parents):
            if not taken[p]:
                taken[p], new_slot[j] = True, p
        free: dict[int, list[int]] = {}
        for p in range(n - 1, -1, -1):  # popped from the end: lowest slot first
            if not taken[p]:
                free.setdefault(source[p], []).append(p)
        copy_from, copy_to = [], []
        for j, p in enumerate(parents):
            if new_slot[j] < 0:
                spare = free.get(source[p])
                if not spare:
                    return False
                new_slot[j] = spare.pop()
                copy_from.append(p)
                copy_to.append(new_slot[j])
        device = index.device
        if copy_from:  # sources are kept slots, targets freed ones: disjoint, so one gather + one scatter
            pos = slice(0, self.length)
            kv = self.self_kv[:, :, :, :, pos]
            moved = kv.index_select(2, torch.tensor(copy_from, device=device))
            kv.index_copy_(2, torch.tensor(copy_to, device=device), moved)
        if new_slot == list(range(n)):
            self.slot = self.slot_owner = None
        else:
            self.slot = torch.tensor(new_slot, device=device)
            owner = [0] * n
            for j, p in enumerate(new_slot):
                owner[p] = j
            self.slot_owner = torch.tensor(owner, device=device)
        return True
