"""The seed document's ELECTRA snippet, running on t5electra.

What it means here: ELECTRA is not a text generator. ``ElectraForMaskedLM`` is ELECTRA's
*generator*, a masked language model, and ``generate`` fills every [MASK] in the input (one at a
time, most confident first, greedy by default). A text without [MASK] comes back with the same
tokens, so the seed's "This is a sample input text." prints as the tokenizer decodes it (lower-cased
by an uncased vocabulary); try "the capital of france is
[MASK]." to see the model at work. ``max_length`` is accepted for compatibility: ELECTRA never
lengthens text.

Usage: python examples/seed_electra.py MODEL_DIR ["text with [MASK]"]
(MODEL_DIR: a local directory with an ElectraForMaskedLM checkpoint and its tokenizer files,
e.g. ``runs/electra-small/generator`` after ``t5electra`` pretraining; also $ELECTRA_MODEL_DIR.)
"""

import os
import sys

from t5electra import ElectraForMaskedLM, ElectraTokenizer

# Load the model and the tokenizer (a local directory: no model hub here)
model_name = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ELECTRA_MODEL_DIR", "electra-small-generator")
tokenizer = ElectraTokenizer.from_pretrained(model_name)
model = ElectraForMaskedLM.from_pretrained(model_name)

# The input text
input_text = sys.argv[2] if len(sys.argv) > 2 else "This is a sample input text."

# Encode it
input_ids = tokenizer.encode(input_text, return_tensors="pt")

# "Generate": fill every [MASK] with the generator (the input has the output's length)
output = model.generate(input_ids, max_length=50, num_return_sequences=1)

# Decode
output_text = tokenizer.decode(output[0], skip_special_tokens=True)

print(output_text)
