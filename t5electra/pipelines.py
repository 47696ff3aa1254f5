"""Text in, text out: ELECTRA's two pretrained models behind one object, for the CLI, the
server and people who just want to use them (the algorithms live in ``generation/fill_mask.py``)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InvalidInputError
from .generation.fill_mask import (Edit, correct, detect_replaced_tokens, encode_texts, fill_mask_generate,
                                   mask_id_from_dir, splice)
from .models.electra import ElectraForMaskedLM, ElectraForPreTraining
from .tokenizers import ElectraTokenizer


class ElectraPipeline:
    """A tokenizer with ELECTRA's two models, for people who just want to use them.

    >>> pipe = ElectraPipeline.from_pretrained("runs/electra-small")   # generator/ + discriminator/
    >>> pipe.fill_mask("the cat sat on the [MASK].")
    >>> pipe.detect("the cat ate on the mat.")
    >>> pipe.correct("the cat ate on the mat.")
    """

    def __init__(self, tokenizer, generator=None, discriminator=None):
        self.tokenizer, self.generator, self.discriminator = tokenizer, generator, discriminator

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, weights: str = "fp32") -> "ElectraPipeline":
        """Load ``directory/generator`` and ``directory/discriminator`` (either may be absent) and
        the tokenizer from ``directory`` or, failing that, from one of the two sub-directories.
        ``weights``: the models run ``optimize_for_inference(weights)`` (fp32: exact; bf16 / int8)."""
        d = Path(directory)
        gen_dir, disc_dir = d / "generator", d / "discriminator"
        if not gen_dir.is_dir() and not disc_dir.is_dir():
            raise InvalidInputError(f"{d}: expected a generator/ and/or discriminator/ sub-directory "
                                    f"(as written by ElectraPretrainer.save_pretrained)")
        tok_dir = next((p for p in (d, gen_dir, disc_dir) if mask_id_from_dir(p) is not None), None)
        if tok_dir is None:
            raise InvalidInputError(f"{d}: no tokenizer files (vocab.txt / tokenizer.json) with a [MASK] token "
                                    f"in it or in generator/ or discriminator/")
        return cls(ElectraTokenizer.from_pretrained(tok_dir),
                   ElectraForMaskedLM.from_pretrained(gen_dir).optimize_for_inference(weights)
                   if gen_dir.is_dir() else None,
                   ElectraForPreTraining.from_pretrained(disc_dir).optimize_for_inference(weights)
                   if disc_dir.is_dir() else None)

    def _need(self, what: str):
        model = getattr(self, what)
        if model is None:
            raise InvalidInputError(f"ElectraPipeline: this needs a {what}, and none was loaded")
        return model

    def fill_mask(self, text: str | list[str], **kwargs) -> str | list[str] | list:
        """Fill the [MASK]s of ``text``; a list of texts when ``num_return_sequences > 1``; a list of
        texts in: one such answer per text. The special tokens ([CLS], [SEP], [PAD], [UNK]) never fill."""
        if isinstance(text, (list, tuple)):  # (was read as a text pair)
            return [self.fill_mask(t, **kwargs) for t in text]
        gen = self._need("generator")
        enc = encode_texts(self.tokenizer, [text], gen.device)
        out = fill_mask_generate(gen, enc["input_ids"], attention_mask=enc["attention_mask"],
                                 token_type_ids=enc.get("token_type_ids"), mask_token_id=self.tokenizer.mask_token_id,
                                 bad_token_ids=self.tokenizer.all_special_ids, **kwargs)
        original = enc["input_ids"][0].tolist()
        texts = [splice(self.tokenizer, text, original, row.tolist()) for row in out]  # the rest as written
        return texts[0] if len(texts) == 1 else texts

    def detect(self, text: str | list[str]):
        return detect_replaced_tokens(self._need("discriminator"), self.tokenizer, text)

    def correct(self, text: str | list[str], **kwargs) -> tuple[str, list[Edit]] | list:
        if isinstance(text, (list, tuple)):  # one (text, edits) per text (was read as a text pair)
            return [self.correct(t, **kwargs) for t in text]
        return correct(self._need("discriminator"), self._need("generator"), self.tokenizer, text, **kwargs)
