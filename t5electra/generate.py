"""Old import path, kept for users: the code lives in ``t5electra/generation/seq2seq.py``."""

from .generation.seq2seq import DecoderCache, EncoderDecoderLM, GenerationSettings, generate

__all__ = ["DecoderCache", "EncoderDecoderLM", "GenerationSettings", "generate"]
