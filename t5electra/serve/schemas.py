"""Request and response bodies of the JSON API (pydantic models; FastAPI turns them into the
OpenAPI schema shown at /docs).

Requests are strict: an unknown field, a string where a number belongs, a value out of range
(every integer has bounds, so no huge number reaches torch), NaN or Infinity, or text that is not
valid Unicode (a lone surrogate such as "\ud800") is a 422 naming the field. Limits that depend on
the server's settings (texts per request, input tokens, max_new_tokens, beams, work) are checked
by the handlers (413 / 400).
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

INT_MAX = 2**31 - 1   # counts, lengths, indices: far above any limit, small enough for any tensor op
SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


def _unicode(text: str) -> str:
    """Refuse text that cannot be encoded as UTF-8 (a lone surrogate from a JSON \\ud800 escape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode: a lone surrogate {text[e.start]!r} at character {e.start} "
                         f"(a \\ud800-\\udfff escape must be half of a surrogate pair)") from None
    return text


Text = Annotated[str, AfterValidator(_unicode)]

ModelName = Optional[str]
_MODEL = Field(None, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
               description="a name from GET /v1/models; may be left out when one loaded model can do the task")
_TEXTS = Field(..., min_length=1, description="input texts (one result per text, in order)")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# -- T5 -------------------------------------------------------------------------------------------
class GenerateRequest(_Request):
    """T5 text-to-text: the decoding options mean what they mean in ``generate`` (transformers')."""

    model: ModelName = _MODEL
    texts: list[Text] = Field(..., min_length=1, examples=[["translate English to German: That is good."]],
                              description="prompts, with the task prefix the model was trained on")
    max_new_tokens: Optional[int] = Field(None, ge=1, le=INT_MAX,
                                          description="tokens to generate after the decoder start token "
                                                      "(default 20, or the server's limit if lower)")
    min_new_tokens: int = Field(0, ge=0, le=INT_MAX, description="EOS is suppressed until this many tokens")
    num_beams: int = Field(1, ge=1, le=INT_MAX, description="1: greedy or sampling; > 1: beam search")
    num_return_sequences: int = Field(1, ge=1, le=INT_MAX, description="beams (or samples) returned per text")
    do_sample: bool = Field(False, description="sample instead of argmax / beam search")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    top_k: Optional[int] = Field(None, ge=0, le=INT_MAX,
                                 description="sampling: keep the k most likely tokens (default 50, 0 = off)")
    top_p: Optional[float] = Field(None, gt=0, le=1, description="sampling: nucleus probability mass")
    length_penalty: float = Field(1.0, description="score = sum of log-probs / length ** length_penalty")
    early_stopping: Union[bool, Literal["never"]] = Field(False, description="beam search stopping rule")
    repetition_penalty: float = Field(1.0, gt=0, description="CTRL repetition penalty (1.0 = off)")
    no_repeat_ngram_size: int = Field(0, ge=0, le=INT_MAX, description="ban repeated n-grams of this size (0 = off)")
    seed: Optional[int] = Field(None, ge=0, le=SEED_MAX, description="makes sampling reproducible")

    @model_validator(mode="after")
    def _lengths(self) -> "GenerateRequest":
        if self.max_new_tokens is not None and self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens={self.min_new_tokens} is larger than max_new_tokens="
                             f"{self.max_new_tokens}: it must be at most max_new_tokens")
        return self


class Sequence(BaseModel):
    text: str = Field(description="the output, decoded without <pad> / </s> (sentinels are kept)")
    tokens: list[str] = Field(description="its pieces, up to and including </s>")
    score: float = Field(description="sum of token log-probs / len(tokens) ** length_penalty (beam search's "
                                     "ranking score); recomputed by one teacher-forced pass of the model")
    logprob: float = Field(description="sum of the token log-probs (log p(output | input))")


class GenerateResult(BaseModel):
    input: str
    outputs: list[Sequence] = Field(description="num_return_sequences outputs, best first for beam search")


class GenerateResponse(BaseModel):
    model: str
    results: list[GenerateResult]


# -- ELECTRA ----------------------------------------------------------------------------------------
class FillMaskRequest(_Request):
    """The ELECTRA generator fills each [MASK]: the best tokens per mask, and the text filled greedily
    (one mask at a time, most confident first)."""

    model: ModelName = _MODEL
    texts: list[Text] = Field(..., min_length=1, examples=[["the cat sat on the [MASK]."]],
                              description="texts with one or more [MASK] tokens")
    top_k: int = Field(5, ge=1, le=100, description="alternatives listed per [MASK]")


class Candidate(BaseModel):
    token: str
    token_id: int
    prob: float


class MaskPrediction(BaseModel):
    position: int = Field(description="token index in the tokenized text ([CLS] is 0)")
    candidates: list[Candidate] = Field(description="top_k tokens, most probable first")


class FillMaskResult(BaseModel):
    input: str
    filled: str = Field(description="the text with every [MASK] filled greedily")
    tokens: list[str] = Field(description="the input's tokens, special tokens included")
    masks: list[MaskPrediction]


class FillMaskResponse(BaseModel):
    model: str
    results: list[FillMaskResult]


class DetectRequest(_Request):
    """The ELECTRA discriminator: the probability that each token was replaced."""

    model: ModelName = _MODEL
    texts: list[Text] = Field(..., min_length=1, examples=[["the chef ate the meal."]])


class TokenProb(BaseModel):
    token: str
    prob: float = Field(description="P(replaced)")


class DetectResult(BaseModel):
    input: str
    tokens: list[TokenProb] = Field(description="every token but [CLS] / [SEP] / padding")


class DetectResponse(BaseModel):
    model: str
    results: list[DetectResult]


class CorrectRequest(_Request):
    """Detect and correct: flagged tokens are masked and refilled by the generator, until stable."""

    model: ModelName = _MODEL
    texts: list[Text] = Field(..., min_length=1, examples=[["the chef ate the meal."]])
    threshold: float = Field(0.5, gt=0, lt=1, description="tokens with P(replaced) above it are refilled")
    max_iters: int = Field(3, ge=1, le=10, description="rounds of flag-and-refill")


class EditOut(BaseModel):
    position: int
    old: str
    new: str
    prob: float


class CorrectResult(BaseModel):
    input: str
    corrected: str
    edits: list[EditOut]


class CorrectResponse(BaseModel):
    model: str
    results: list[CorrectResult]


class ClassifyRequest(_Request):
    """A fine-tuned sequence-classification head; label names come from the model's id2label."""

    model: ModelName = _MODEL
    texts: list[Text] = Field(..., min_length=1, examples=[["a gripping, funny film."]])
    text_pairs: Optional[list[Text]] = Field(None, description="second segments (sentence-pair tasks), one per text")


class ClassifyResult(BaseModel):
    input: str
    label: Optional[str] = Field(description="the best label (None for regression)")
    score: float = Field(description="its probability, or the predicted value for regression")
    scores: dict[str, float] = Field(description="probability of every label (sigmoid for multi-label)")


class ClassifyResponse(BaseModel):
    model: str
    results: list[ClassifyResult]


# -- attention --------------------------------------------------------------------------------------
class AttentionRequest(_Request):
    """One head's (or the mean of all heads') attention weights over the tokens of a text."""

    model: ModelName = _MODEL
    text: Text = Field(..., examples=["translate English to German: That is good."])
    stack: Literal["encoder", "decoder", "cross"] = Field(
        "encoder", description="T5 only: encoder self-attention, decoder self-attention, or cross-attention")
    target: Optional[Text] = Field(None, description="T5 decoder/cross: the output text to read; default: "
                                                    "the model's greedy output")
    component: Optional[Literal["discriminator", "generator", "classifier", "t5"]] = Field(
        None, description="which model of an ELECTRA pretraining run (default: the discriminator)")
    layer: int = Field(0, ge=0, le=INT_MAX)
    head: Optional[int] = Field(None, ge=0, le=INT_MAX, description="None: the mean over heads")


class AttentionResponse(BaseModel):
    model: str
    component: str
    stack: str
    layer: int
    head: Optional[int]
    num_layers: int
    num_heads: int
    query_tokens: list[str] = Field(description="rows of weights")
    key_tokens: list[str] = Field(description="columns of weights")
    weights: list[list[float]] = Field(description="(queries, keys); each row sums to 1")


# -- misc -------------------------------------------------------------------------------------------
class ErrorResponse(BaseModel):
    detail: str
    errors: Optional[list[dict]] = None
