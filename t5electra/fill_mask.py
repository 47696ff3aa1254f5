"""Old import path, kept for users: the algorithms live in ``t5electra/generation/fill_mask.py``,
``ElectraPipeline`` in ``t5electra/pipelines.py``."""

from .generation.fill_mask import Edit, correct, detect_replaced_tokens, fill_mask_generate, resolve_mask_token_id
from .pipelines import ElectraPipeline

__all__ = ["Edit", "ElectraPipeline", "correct", "detect_replaced_tokens", "fill_mask_generate",
           "resolve_mask_token_id"]
