"""Seeing weights changed behind the version counter.

The prepared copies of weights (packed, bf16 or int8 kernels, the int8 screen of T5's output layer)
are used only while their weight is unchanged, which every call checks by the tensor's storage
and version counter: an in-place op on the parameter bumps the counter. An edit through
``weight.data`` does not (``.data`` is a tensor with a counter of its own), nor does torch's fused
AdamW kernel (torch 2.13, measured; train/loop.py bumps the counters after each step): weight
surgery, EMA updates and merges written that way, and fused-optimizer loops, left the old copies
in use, and the model computed with weights it no longer had (weights made under
``torch.inference_mode()`` have no counter at all: :func:`stamp`). A :class:`Fingerprint` keeps a few values of the matrix: at least one in
every row and every column for the int8 screen of T5's output layer, the one copy a model makes
without being asked (a changed matrix, row or column shows in it), 64 along the diagonal for the
kernels of ``optimize_for_inference`` (a changed matrix shows), compared where a model
starts a piece of work (:func:`.weights.drop_stale_copies`: each T5 decoding, in ``new_decoder_cache``, and each
forward of a direct submodule of a model that ``optimize_for_inference`` prepared, its encoder /
decoder stacks, ELECTRA's body and head). Reading them costs max(rows,
columns) or 64 strided reads per matrix, not a pass over it, and one comparison for all of a
model's layers. An edit of a few elements (or, in an optimised model, of a few rows) through
``.data`` can still go unseen: call ``optimize_for_inference`` again after such surgery.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class Fingerprint:
    """The diagonals of the square blocks that tile a 2-d tensor along its longer side (the last
    block aligned to the end): every row and every column holds at least one of the values. Kept
    as 1-d strided views of the tensor's storage (made once: a check reads them, no index tensors,
    no copy of the matrix) and the values they showed; a 1-d tensor: all its values."""

    SPARSE = 64  # values of a sparse fingerprint

    def __init__(self, tensor: torch.Tensor, every_row: bool = True):
        """``every_row`` False: at most ``SPARSE`` values along the main diagonal (a whole-matrix
        edit shows, an edit of a few rows may not; cheaper to read: ~64 instead of max(rows, cols))."""
        t = tensor.detach()
        self.key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()))
        self.views = self._views(t, every_row)
        self.values = self.read().clone()

    def _views(self, t: torch.Tensor, every_row: bool) -> list[torch.Tensor]:
        if t.dim() != 2 or t.numel() == 0:
            return [t.reshape(-1)]
        rows, cols = t.shape
        s0, s1 = t.stride()
        n, long, along = (cols, rows, s0) if rows >= cols else (rows, cols, s1)
        if not every_row:
            step = -(-n // self.SPARSE)
            return [t.as_strided((-(-n // step),), (step * (s0 + s1),), t.storage_offset())]
        starts = [b * n for b in range(long // n)] + ([long - n] if long % n else [])
        # the diagonal of the block at row (or column) b: elements (b + i, i), or (i, b + i), i < n
        return [t.as_strided((n,), (s0 + s1,), t.storage_offset() + b * along) for b in starts]

    def read(self) -> torch.Tensor:
        return self.views[0] if len(self.views) == 1 else torch.cat(self.views)

    def matches(self, tensor: torch.Tensor | None) -> bool:
        """Whether ``tensor`` is the tensor seen at construction (storage, shape, layout) and still
        holds the values it showed then."""
        return (tensor is not None and (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride())) == self.key
                and torch.equal(self.read(), self.values))


class PreparedCopy:
    """A copy of weights made for a kernel (packed, rounded, quantised, an int8 screen): valid only
    next to the weights it was made from, and not something to save. ``copy.deepcopy`` (a copied
    model has weights of its own) and pickling (``torch.save(model)``, which failed: oneDNN's packed
    tensors have no storage, "Cannot access storage of OpaqueTensorImpl") put None in its place:
    the copy, or the loaded model, runs the plain fp32 products until ``optimize_for_inference`` is
    called again (and T5's next greedy step rebuilds its int8 screen)."""

    def __reduce__(self):  # pickle's hook, and copy.deepcopy's too
        return _dropped, ()


def _dropped() -> None:
    return None


def stamp(tensor: torch.Tensor) -> tuple[int, int]:
    """(version counter, storage address): what every call of a prepared copy compares. A tensor
    made under ``torch.inference_mode()`` (a model built or loaded there, as transformers' users
    do) has no version counter (reading it raises): -1 stands for it. Outside inference mode torch
    refuses in-place changes of such a tensor; inside it they go uncounted, like edits through
    ``.data``, and the fingerprints are what see them."""
    return (-1 if tensor.is_inference() else tensor._version), tensor.data_ptr()


def all_match(prints: Sequence[Fingerprint]) -> bool:
    """Whether none of ``prints`` changed its values, in one comparison (a model's layers: one
    concatenation of their views instead of a comparison each). Storage and layout are the
    callers' version checks."""
    if not prints:
        return True
    return torch.equal(torch.cat([v for p in prints for v in p.views]), torch.cat([p.values for p in prints]))
