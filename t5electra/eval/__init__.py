"""Scoring predictions per task kind: ``text_to_text`` (T5 generates, the task's postprocessor
and metrics score) and ``heads`` (encoder task heads: classification, regression, token
classification, extractive QA). Recipes and ``evaluate`` share these."""
