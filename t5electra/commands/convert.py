"""``t5electra convert SRC DST``: any checkpoint we can read -> a clean Hugging Face directory.

    t5electra convert runs/t5/checkpoints/step-00001000 exported/t5    # drop the training state
    t5electra convert hf-downloads/t5-small our/t5-small                # pytorch_model.bin (or shards) -> safetensors
    t5electra convert runs/electra exported/electra                     # -> generator/ + discriminator/

SRC may be a model directory (safetensors, sharded safetensors, ``pytorch_model.bin`` or its
shards; pickles are read with ``weights_only=True`` and refused if they need code), a training
checkpoint (``RUN/checkpoints/step-N``: the optimizer state etc. are left behind; an FSDP run's
sharded checkpoint, ``sharded/`` + config files, is gathered into one model first), or a run
directory (its ``model/``). An ELECTRA pretraining model (``generator/`` + ``discriminator/``) is
converted part by part. DST gets ``config.json`` + ``model.safetensors`` (+ the tokenizer files),
which transformers and t5electra both load. The result is verified: DST is reloaded (with our
class) and its logits on a random input must equal the source model's (``--no-verify`` skips it).
DST is written under a temporary name beside it and renamed once complete and verified: a
conversion that fails or is killed leaves no DST (nor half of one, which a rerun would refuse).
A classifier with ``classifier_pooling: mean`` gets a warning: transformers' class loads it but
pools the [CLS] vector, so its predictions differ.

    t5electra convert --merge runs/lora-sst2/adapter exported/sst2 [--base BASE_DIR]

``--merge``: SRC is a LoRA adapter (PEFT's adapter_config.json + adapter_model.safetensors, ours or
PEFT's; or a run directory with ``adapter/``, or one of its checkpoints). It is folded into its base
model (``--base``, default the adapter's ``base_model_name_or_path``) and DST gets the merged model;
verified against the unmerged base + adapter.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import tempfile
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="model, training checkpoint or run directory")
    parser.add_argument("dst", metavar="DST", help="output directory (created; must be empty or absent)")
    parser.add_argument("--no-verify", action="store_true", help="skip reloading DST and comparing logits")
    parser.add_argument("--merge", action="store_true",
                        help="SRC is a LoRA adapter (PEFT layout): write its base model with the adapter merged in")
    parser.add_argument("--base", metavar="DIR", help="with --merge: the base model directory (default: the "
                                                      "adapter's base_model_name_or_path)")


def model_class(model_dir: Path):
    """Our class for the checkpoint's ``architectures`` (else its ``model_type``'s default)."""
    from ..models.registry import model_class as registered_class

    return registered_class(model_dir)


def source_dir(src: Path) -> Path:
    """SRC itself if it holds a model (or generator/ + discriminator/), else a run's model/ or latest
    checkpoint (train.checkpointing.run_model_dir, as model.init_from reads it)."""
    from ..errors import CheckpointNotFoundError
    from ..lora.merge import is_adapter_dir
    from ..train.checkpointing import CheckpointManager, follow_pointer, holds_model, mlm_generator, run_model_dir

    src = follow_pointer(src)
    if not src.is_dir():
        raise CheckpointNotFoundError(f"{str(src)!r} is not a directory")
    found = run_model_dir(src)
    if holds_model(found):
        return found
    for d in (found, found / "model"):
        if mlm_generator(d) is not None:  # an MLM pretraining output: its generator is the model
            return mlm_generator(d)
    # a LoRA run's checkpoints (and an unfinished run) hold adapters only: merging makes the model
    latest = CheckpointManager(found).latest() if (found / "checkpoints").is_dir() else None
    adapter = next((d for d in (found, found / "adapter", latest) if d is not None and is_adapter_dir(d)), None)
    if adapter is not None:
        raise CheckpointNotFoundError(f"{adapter} holds a LoRA adapter (adapter_config.json), not a model: merge it "
                                      f"into its base model with `t5electra convert --merge {adapter} DST` "
                                      f"(--base BASE_DIR when the adapter's base is elsewhere)")
    raise CheckpointNotFoundError(f"{src}: no config.json (nor generator/ + discriminator/), and no model/ or "
                                  f"checkpoints/ holding one")


def copy_tokenizer(src: Path, dst: Path) -> str | None:
    """Load the tokenizer of ``src`` (if any) and save it into ``dst``; returns its class name."""
    from ..tokenizers import ElectraTokenizer, T5Tokenizer

    markers = {"spiece.model": T5Tokenizer, "vocab.txt": ElectraTokenizer}
    for marker, cls in markers.items():
        if (src / marker).is_file():
            cls.from_pretrained(src).save_pretrained(dst)
            return cls.__name__
    if (src / "tokenizer.json").is_file():
        for cls in (T5Tokenizer, ElectraTokenizer):
            try:
                cls.from_pretrained(src).save_pretrained(dst)
                return cls.__name__
            except Exception:  # noqa: BLE001 - the other kind of tokenizer.json: try the next class
                continue
    return None


def verify(model, dst: Path, cls, merged: bool = False, shown: Path | None = None) -> float:
    """Reload ``dst`` and compare logits with ``model`` on a fixed random input; the max |difference|.
    ``merged``: ``model`` is the unmerged base + adapter, so float rounding differs (W x + B A x vs
    (W + B A) x): allowed up to 1e-4 of the largest logit. ``shown``: the name errors give ``dst``."""
    import torch

    from ..errors import WeightsMismatchError
    from ..modeling import OWN_CALL

    reloaded = cls.from_pretrained(dst, dtype="auto")
    model.eval()
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(3, min(vocab, 1000), (2, 12), generator=g)
    kwargs = {"input_ids": ids}
    if "T5" in cls.__name__ and cls.__name__ != "T5EncoderModel":
        kwargs["decoder_input_ids"] = torch.randint(3, min(vocab, 1000), (2, 5), generator=g)
    with torch.no_grad():
        a, b = model(**kwargs, **OWN_CALL), reloaded(**kwargs, **OWN_CALL)
    ta = getattr(a, "logits", None) if getattr(a, "logits", None) is not None else a[0]
    tb = getattr(b, "logits", None) if getattr(b, "logits", None) is not None else b[0]
    if isinstance(ta, tuple):  # QA: (start, end)
        ta, tb = torch.stack(ta), torch.stack(tb)
    diff = float((ta.float() - tb.float()).abs().max())
    if diff > (1e-4 * max(1.0, float(ta.float().abs().max())) if merged else 1e-5):
        raise WeightsMismatchError(f"{shown or dst}: the converted model's outputs differ from the source's by "
                                   f"{diff:.3g}")
    return diff


def save_warned(model, dst: Path, shown: Path) -> None:
    """``model.save_pretrained(dst)``, and a warning on stderr naming ``shown`` when transformers loads
    DST without an error but computes something else (``transformers_differs``: a classifier on the
    mean of the token vectors, the quickstart's ELECTRA and MiniLM classifiers, which transformers'
    ElectraForSequenceClassification reads as [CLS] pooling). verify() cannot see it: it reloads DST
    with our class. Said once: this line, not save_pretrained's Python warning as well."""
    import warnings

    from ..modeling import TransformersDiffersWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TransformersDiffersWarning)
        model.save_pretrained(dst)
    differs = model.transformers_differs()
    if differs:
        print(f"t5electra convert: warning: {shown}: {differs} (the verification reloads it with t5electra's "
              f"class)", file=sys.stderr)


def convert_one(src: Path, dst: Path, check: bool, shown: Path | None = None) -> str:
    """``src`` converted into ``dst`` (``shown``: the name the messages give it); the report line."""
    from ..errors import WeightsMismatchError

    shown = shown or dst

    cls = model_class(src)
    model = cls.from_pretrained(src, dtype="auto")  # a bf16 / fp16 checkpoint stays so (not twice the size)
    report = getattr(model, "load_report", None)
    if report is not None and report.newly_initialized:
        # e.g. BertForSequenceClassification: its classifier reads BERT's pooled output, which
        # ELECTRA's head (two layers on the first token) has no place for. The output would carry a
        # random head, and the round-trip check below could not see it (it compares our own files).
        unused = f"; the source's {report.unused[:4]} would be dropped" if report.unused else ""
        raise WeightsMismatchError(
            f"{src}: its weights do not fill {cls.__name__}: {report.newly_initialized[:4]} would start from random "
            f"values{unused}. This checkpoint has no faithful {cls.__name__} equivalent, so it is not converted")
    save_warned(model, dst, shown)
    tok = copy_tokenizer(src, dst)
    line = f"{src} ({type(model).__name__}, {model.num_parameters():,} parameters) -> {shown}" + \
        (f" + {tok}" if tok else " (no tokenizer found)")
    if check:
        line += f"; verified: max |logits difference| = {verify(model, dst, cls, shown=shown):.1g}"
    return line


def merge_adapter(src: Path, dst: Path, base: str | None, check: bool, shown: Path | None = None) -> str:
    """SRC's LoRA adapter merged into its base, saved to DST; verified against the unmerged model."""
    from ..lora.merge import adapter_dir, base_dir, load_adapted

    shown = shown or dst
    adapted = load_adapted(src, base)
    reference = copy.deepcopy(adapted) if check else None  # merging folds the adapters in place
    trainable = sum(t.numel() for t in adapted.adapter_state_dict().values())
    model = adapted.merge_and_unload()
    save_warned(model, dst, shown)
    a = adapter_dir(src)
    tok = copy_tokenizer(a, dst) or copy_tokenizer(base_dir(a, adapted.peft_config["default"], base), dst)
    line = f"{a} ({trainable:,} adapter parameters) merged into {type(model).__name__} -> {shown}" + \
        (f" + {tok}" if tok else " (no tokenizer found)")
    if check:
        line += (f"; verified: max |logits difference| = "
                 f"{verify(reference, dst, type(model), merged=True, shown=shown):.1g}")
    return line


def run(args: argparse.Namespace) -> int:
    from ..errors import T5ElectraError

    src, dst = Path(args.src).expanduser(), Path(args.dst).expanduser()
    try:
        if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
            from ..errors import CheckpointError

            what = "is not empty" if dst.is_dir() else "is a file"
            raise CheckpointError(f"{dst} exists and {what}: choose a new directory")
        if args.base and not args.merge:
            from ..errors import ConfigError

            raise ConfigError("--base is for --merge (the base model of a LoRA adapter)")
        if args.merge:
            with _writing(dst) as tmp:
                line = merge_adapter(src, tmp, args.base, not args.no_verify, shown=dst)
            print(line)
            return 0
        src = source_dir(src)
        with tempfile.TemporaryDirectory(prefix="t5electra-convert-") as gathered:
            return convert_dir(gather_sharded(src, Path(gathered)), dst, not args.no_verify)
    except T5ElectraError as e:
        print(f"t5electra convert: error: {e}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _writing(dst: Path):
    """A temporary directory beside ``dst`` that becomes ``dst`` when the block succeeds (core.atomic.
    writing_dir); CheckpointError when another process wrote ``dst`` meanwhile."""
    from ..core.atomic import writing_dir
    from ..errors import CheckpointError

    try:
        with writing_dir(dst, replace=False) as tmp:
            yield tmp
    except FileExistsError:
        raise CheckpointError(f"{dst} was written by another process meanwhile: choose a new directory") from None


def gather_sharded(src: Path, tmp: Path) -> Path:
    """A sharded training checkpoint (train/sharded.py) as a plain model directory in ``tmp``; else ``src``."""
    from ..train.checkpointing import ELECTRA_PARTS, save_model
    from ..train.sharded import has_sharded_state, materialize

    if not has_sharded_state(src):
        return src
    save_model(materialize(src), tmp)
    for part in ("", *ELECTRA_PARTS):
        if (src / part).is_dir() and (tmp / part).is_dir():
            copy_tokenizer(src / part, tmp / part)
    return tmp


def convert_dir(src: Path, dst: Path, check: bool) -> int:
    from ..errors import T5ElectraError
    from ..train.checkpointing import ELECTRA_PARTS

    try:
        with _writing(dst) as tmp:  # dst appears complete and verified, or not at all
            if (src / "config.json").is_file():
                lines = [convert_one(src, tmp, check, shown=dst)]
            else:  # an ELECTRA pretraining model: generator/ + discriminator/, the tokenizer beside them
                lines = [convert_one(src / part, tmp / part, check, shown=dst / part) for part in ELECTRA_PARTS]
                copy_tokenizer(src, tmp)
        print("\n".join(lines))
    except T5ElectraError as e:
        print(f"t5electra convert: error: {e}", file=sys.stderr)
        return 1
    return 0
