"""Replaced-token detection and correction with ELECTRA's two models.

The discriminator (``ElectraForPreTraining``) gives every token a probability of having been
replaced; ``correct`` masks the suspicious ones and lets the generator (``ElectraForMaskedLM``)
fill them again, until nothing changes.

Usage: python examples/detect_and_correct.py RUN_DIR ["a text to check"]
RUN_DIR holds generator/ and discriminator/ (what ElectraPretrainer.save_pretrained writes) and
the tokenizer files (in RUN_DIR or in either sub-directory).
"""

import sys

from t5electra.pipelines import ElectraPipeline

run_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/electra-small"
text = sys.argv[2] if len(sys.argv) > 2 else "the chef cooked the meal and ate it on the roof."

pipe = ElectraPipeline.from_pretrained(run_dir)

print("P(replaced) per token:")
for token, prob in pipe.detect(text):
    print(f"  {token:>12s}  {prob:.3f}  {'<- suspicious' if prob > 0.5 else ''}")

corrected, edits = pipe.correct(text, threshold=0.5)
print("corrected:", corrected)
for e in edits:
    print(f"  position {e.position}: {e.old!r} -> {e.new!r} (p_replaced={e.prob:.2f})")
