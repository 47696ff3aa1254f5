"""The device the single-process recipe tests train on: "cpu" (CI), or the accelerator named by
$T5ELECTRA_TEST_DEVICE ("cuda"), so that the same tests (learning, resuming to the last bit,
keeping the best checkpoint) run on a GPU machine: docs/performance.md, "On a GPU". There, bitwise
resumes need deterministic kernels (train.deterministic); CPU training is deterministic as it is."""

import os

TRAIN_DEVICE = os.environ.get("T5ELECTRA_TEST_DEVICE", "cpu")
DEVICE_ARGS = [f"--train.device={TRAIN_DEVICE}"] + (["--train.deterministic=true"] if TRAIN_DEVICE != "cpu" else [])
