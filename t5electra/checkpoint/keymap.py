"""Declarative key maps between our parameter names and Hugging Face's.

A :class:`KeyMap` is a list of :class:`Rule` s. A rule names one of our keys and the HF key(s) it
comes from, with ``{i}``-style placeholders for layer numbers::

    Rule("encoder.layers.{i}.attn.qkv.weight",
         ("encoder.block.{i}.layer.0.SelfAttention.q.weight",
          "encoder.block.{i}.layer.0.SelfAttention.k.weight",
          "encoder.block.{i}.layer.0.SelfAttention.v.weight"))

Several HF keys are concatenated along dim 0 into ours (fused projections) and split back into
equal parts on export. ``aliases`` are HF keys that hold a tied copy of another (e.g. T5's
``encoder.embed_tokens.weight`` is ``shared.weight``): read when the canonical key is absent,
never required. ``ignore`` are regexes of HF keys that we drop knowingly (reported as unused).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

import torch

from ..errors import WeightsMismatchError

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _pattern_regex(pattern: str) -> re.Pattern:
    parts, pos = [], 0
    for m in _PLACEHOLDER.finditer(pattern):
        parts.append(re.escape(pattern[pos:m.start()]))
        parts.append(f"(?P<{m.group(1)}>\\d+)")
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("".join(parts) + r"\Z")


@dataclass(frozen=True)
class Rule:
    ours: str
    hf: tuple[str, ...] | str

    @property
    def hf_keys(self) -> tuple[str, ...]:
        return (self.hf,) if isinstance(self.hf, str) else tuple(self.hf)


@dataclass
class KeyMap:
    rules: list[Rule]
    aliases: dict[str, str] = field(default_factory=dict)  # hf alias key -> canonical hf key
    ignore: tuple[str, ...] = ()  # regexes of hf keys dropped on purpose

    @cached_property
    def _hf_regex(self) -> list[tuple[Rule, re.Pattern]]:
        return [(r, _pattern_regex(r.hf_keys[0])) for r in self.rules]

    @cached_property
    def _ours_regex(self) -> list[tuple[Rule, re.Pattern]]:
        return [(r, _pattern_regex(r.ours)) for r in self.rules]

    def is_ignored(self, hf_key: str) -> bool:
        return any(re.fullmatch(p, hf_key) for p in self.ignore)

    # -- HF -> ours -----------------------------------------------------------------------------
    def from_hf(self, hf_sd: dict[str, torch.Tensor], sources: dict[str, str] | None = None
                ) -> tuple[dict[str, torch.Tensor], list[str], dict[str, str]]:
        """Convert an HF state dict. Returns (our state dict, HF keys not used, our key -> HF key)."""
        sources = sources or {}
        hf_sd = dict(hf_sd)
        # An alias stands in for its canonical key only when that key is absent.
        for alias, canon in self.aliases.items():
            if alias in hf_sd:
                t = hf_sd.pop(alias)
                hf_sd.setdefault(canon, t)
        used: set[str] = set()
        ours: dict[str, torch.Tensor] = {}
        origin: dict[str, str] = {}
        for key in hf_sd:
            for rule, rx in self._hf_regex:
                m = rx.match(key)
                if not m:
                    continue
                names = [h.format(**m.groupdict()) for h in rule.hf_keys]
                absent = [n for n in names if n not in hf_sd]
                if absent:
                    where = sources.get(key, "the checkpoint")
                    raise WeightsMismatchError(
                        f"{where}: has {key!r} but not {absent[0]!r}, which {rule.ours!r} also needs")
                parts = [hf_sd[n] for n in names]
                shapes = [tuple(t.shape) for t in parts]
                if len(set(shapes)) > 1:  # fused parts (q, k, v) must agree, or torch.cat fails obscurely
                    where = sources.get(key, "the checkpoint")
                    listed = ", ".join(f"{n} {s}" for n, s in zip(names, shapes))
                    raise WeightsMismatchError(f"{where}: the tensors fused into {rule.ours.format(**m.groupdict())!r} "
                                               f"must have one shape, got {listed}")
                our_key = rule.ours.format(**m.groupdict())
                ours[our_key] = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
                origin[our_key] = key
                used.update(names)
                break
        unused = [k for k in hf_sd if k not in used]
        return ours, unused, origin

    # -- ours -> HF -----------------------------------------------------------------------------
    def hf_names(self, our_key: str) -> tuple[str, ...] | None:
        """The HF key(s) our parameter ``our_key`` is exported as (several for a fused projection,
        in the order of its row blocks), or None when no rule names it."""
        for rule, rx in self._ours_regex:
            m = rx.match(our_key)
            if m:
                return tuple(h.format(**m.groupdict()) for h in rule.hf_keys)
        return None

    def to_hf(self, our_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key, t in our_sd.items():
            for rule, rx in self._ours_regex:
                m = rx.match(key)
                if not m:
                    continue
                names = [h.format(**m.groupdict()) for h in rule.hf_keys]
                chunks = (t,) if len(names) == 1 else torch.chunk(t, len(names), 0)
                out.update(zip(names, chunks))
                break
            else:
                raise WeightsMismatchError(f"no key-map rule exports our parameter {key!r}")
        return out
