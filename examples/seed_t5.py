"""The seed document's T5 snippet, running on t5electra.

Unchanged except for two lines: the import (``t5electra`` instead of ``transformers``) and
``model_name``, which must be a local directory (there is no model hub here): a directory written by
``save_pretrained`` (ours or transformers'), holding config.json, the weights and spiece.model or
tokenizer.json.

Usage: python examples/seed_t5.py MODEL_DIR   (or set $T5_MODEL_DIR)
"""

import os
import sys

from t5electra import T5Tokenizer, T5ForConditionalGeneration

# 加载预训练模型和标记器 (load the model and the tokenizer)
model_name = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("T5_MODEL_DIR", "t5-small")
tokenizer = T5Tokenizer.from_pretrained(model_name)
model = T5ForConditionalGeneration.from_pretrained(model_name)

# 定义输入文本 (the input text)
input_text = "This is a sample input text."

# 将输入文本转换为输入格式 (encode it)
input_ids = tokenizer.encode(input_text, return_tensors="pt")

# 使用模型生成输出文本 (generate)
output = model.generate(input_ids, max_length=50, num_return_sequences=1)

# 将输出文本解码为文本格式 (decode)
output_text = tokenizer.decode(output[0], skip_special_tokens=True)

print(output_text)
