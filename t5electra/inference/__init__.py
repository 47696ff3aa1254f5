"""CPU / GPU speed code, kept out of the model files: the models expose one hook each
(``T5Stack.decode(..., linear)``, ``ElectraModel.inference_chunk_tokens``) and this package plugs
into it. Every piece has a test proving it changes nothing but speed (tests/inference/test_generate_fast.py,
tests/inference/test_electra_fast.py)."""
