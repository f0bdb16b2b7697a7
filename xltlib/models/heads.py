"""Task heads for tagging, extractive QA and multiple choice on a bare ``AutoModel`` encoder.

They follow the conventions of ``models.MeanPoolClassifier`` so that the training loop and the
robust objectives treat every task alike: attributes ``encoder`` / ``config``,
``get_input_embeddings()``, ``set_attn_implementation()``, ``base_model``, and
``forward(input_ids | inputs_embeds, attention_mask, token_type_ids, labels)`` returning a
``ModelOutput`` with a float32 cross-entropy ``.loss`` (None without labels) and ``.logits``.
Every tensor a head receives has the batch on dim 0 (labels included), so RS-RP's m-fold
repetition of the whole batch along dim 0 works unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, AutoModelForSequenceClassification
from transformers.modeling_outputs import (
    ModelOutput,
    MultipleChoiceModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

from xltlib.core.registry import Registry
from xltlib.models.load import hub_error, resolve_model

__all__ = ["load_classifier", "HEAD_POOLING", "MeanPoolClassifier", "TokenClassifier", "SpanExtractor", "MultipleChoice", "DualEncoder", "SpanExtractorOutput", "HEAD_KINDS",
           "load_head", "MASKED_LOGIT"]

# Logit given to padding positions of a span head: exp() underflows to 0, yet it stays finite in
# fp16/bf16 and when a start and an end score are added.
MASKED_LOGIT = -1e4


@dataclass
class SpanExtractorOutput(ModelOutput):
    """``logits`` [B, L, 2] (start, end); ``start_logits`` / ``end_logits`` are its two [B, L] slices."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None


def _linear(config, n_out: int) -> nn.Linear:
    """A fresh linear layer on the hidden size, initialised like the encoder's own layers."""
    layer = nn.Linear(config.hidden_size, n_out)
    nn.init.normal_(layer.weight, std=getattr(config, "initializer_range", 0.02))
    nn.init.zeros_(layer.bias)
    return layer


class _EncoderHead(nn.Module):
    """Shared plumbing of every head: the encoder, dropout and the accessors the training loop and the
    robust objectives use."""

    def __init__(self, encoder, num_labels: int):
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.config.num_labels = num_labels  # save_checkpoint records it; load_head takes it back
        self.dropout = nn.Dropout(getattr(self.config, "hidden_dropout_prob", 0.1))

    @property
    def base_model(self):
        return self.encoder

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def set_attn_implementation(self, impl):
        self.encoder.set_attn_implementation(impl)

    def _hidden(self, input_ids, attention_mask, token_type_ids, inputs_embeds, **kwargs) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           inputs_embeds=inputs_embeds, **kwargs)
        return out.last_hidden_state

    @staticmethod
    def _mean_pool(h: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Mean of the non-padding token states (E5's own pooling)."""
        if attention_mask is None:
            return h.mean(1)
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1)


class _LinearClassifier(_EncoderHead):
    """A head whose output is ``classifier`` (a linear layer) on dropped-out encoder states."""

    def __init__(self, encoder, num_labels: int):
        super().__init__(encoder, num_labels)
        self.classifier = _linear(self.config, num_labels)


class MeanPoolClassifier(_LinearClassifier):
    """Encoder + dropout + linear head on the mean of the token states (sentence-pair classification).

    E5 models are trained with mean pooling, so their <s> state carries little sentence
    information and a CLS-pooler head learns slowly from a few hundred examples.
    """

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None,
                labels=None, **kwargs):
        h = self._hidden(input_ids, attention_mask, token_type_ids, inputs_embeds, **kwargs)
        logits = self.classifier(self.dropout(self._mean_pool(h, attention_mask)))
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class TokenClassifier(_LinearClassifier):
    """One label per token (NER / POS on first subwords): logits [B, L, C]; labels [B, L], -100 ignored.

    The loss is the mean over labelled tokens of the whole batch (as HF's token-classification
    head); a batch with no labelled token gives 0 instead of NaN.
    """

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None,
                labels=None, **kwargs):
        h = self._hidden(input_ids, attention_mask, token_type_ids, inputs_embeds, **kwargs)
        logits = self.classifier(self.dropout(h))
        loss = None
        if labels is not None:
            labels = labels.to(logits.device).reshape(-1)
            total = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels,
                                                ignore_index=-100, reduction="sum")
            loss = total / (labels != -100).sum().clamp_min(1)
        return TokenClassifierOutput(loss=loss, logits=logits)


class SpanExtractor(_EncoderHead):
    """Extractive QA: start/end scores per token, logits [B, L, 2]; labels [B, 2] = (start, end).

    Padding (attention_mask == 0) gets ``MASKED_LOGIT`` in the loss and in the returned logits, so
    it can never be predicted. Loss = mean of the start and end cross-entropies (HF's QA head);
    label positions outside [0, L) are ignored, as there.
    """

    def __init__(self, encoder, num_labels: int = 2):
        if num_labels != 2:
            raise ValueError(f"a span extractor has 2 outputs (start, end), got num_labels={num_labels}")
        super().__init__(encoder, 2)
        self.qa_outputs = _linear(self.config, 2)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None,
                labels=None, **kwargs):
        h = self._hidden(input_ids, attention_mask, token_type_ids, inputs_embeds, **kwargs)
        logits = self.qa_outputs(self.dropout(h))
        if attention_mask is not None:
            pad = (attention_mask == 0).to(logits.device).unsqueeze(-1)
            logits = logits.masked_fill(pad, MASKED_LOGIT)
        loss = None
        if labels is not None:
            seq_len = logits.shape[1]
            labels = labels.to(logits.device).long().clamp(0, seq_len)  # seq_len = ignored (as HF)
            ce = [nn.functional.cross_entropy(logits[..., k].float(), labels[:, k], ignore_index=seq_len)
                  for k in (0, 1)]
            loss = (ce[0] + ce[1]) / 2
        return SpanExtractorOutput(loss=loss, logits=logits, start_logits=logits[..., 0],
                                   end_logits=logits[..., 1])


def _unstack(t: torch.Tensor | None, flat_dims: int) -> torch.Tensor | None:
    """[B, K, ...] -> [B * K, ...] (row i * K + j = choice j of example i); flat input unchanged."""
    return t.flatten(0, 1) if t is not None and t.dim() == flat_dims + 1 else t


class MultipleChoice(_EncoderHead):
    """Scores each (context, choice) row by a linear layer on its mean-pooled states.

    Inputs are flattened [B * num_choices, L], choice-major inside each example (row
    i * num_choices + j is choice j of example i); [B, num_choices, L] is flattened the same way.
    Scores are reshaped to logits [B, num_choices]; labels [B]. Because the reshape only groups
    consecutive rows, a batch repeated m times along dim 0 (RS-RP) gives [m * B, num_choices],
    matching labels repeated m times.
    """

    def __init__(self, encoder, num_choices: int):
        if num_choices < 2:
            raise ValueError(f"multiple choice needs at least 2 choices, got {num_choices}")
        super().__init__(encoder, num_choices)
        self.num_choices = num_choices
        self.scorer = _linear(self.config, 1)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None,
                labels=None, **kwargs):
        input_ids, attention_mask, token_type_ids = (_unstack(t, 2) for t in (input_ids, attention_mask,
                                                                              token_type_ids))
        inputs_embeds = _unstack(inputs_embeds, 3)
        h = self._hidden(input_ids, attention_mask, token_type_ids, inputs_embeds, **kwargs)
        scores = self.scorer(self.dropout(self._mean_pool(h, attention_mask))).squeeze(-1)  # [rows]
        if scores.shape[0] % self.num_choices:
            raise ValueError(f"multiple choice: {scores.shape[0]} rows is not a multiple of "
                             f"num_choices={self.num_choices}")
        logits = scores.view(-1, self.num_choices)
        loss = None
        if labels is not None:
            if labels.shape[0] != logits.shape[0]:
                raise ValueError(f"multiple choice: {labels.shape[0]} labels for {logits.shape[0]} examples "
                                 f"({scores.shape[0]} rows / {self.num_choices} choices)")
            loss = nn.functional.cross_entropy(logits.float(), labels.to(logits.device))
        return MultipleChoiceModelOutput(loss=loss, logits=logits)


# Logit scale of the dual encoder: XTREME's LAReQA model starts its learnable scale at 100
# (google-research/xtreme third_party/bert.py lines 22-23), which is also E5's temperature of 0.01.
RETRIEVAL_LOGIT_SCALE = 100.0


class DualEncoder(_EncoderHead):
    """Question/answer dual encoder (LAReQA): one shared encoder, mean-pooled (E5's pooling) and L2-normalised.

    Rows come in pairs, [q0, a0, q1, a1, ...]; logits [B, B] = scale * cos(q_i, a_j); the loss is the
    cross-entropy of each question over the B answers of its batch (in-batch negatives, as XTREME's
    ``BertForRetrieval``, third_party/bert.py lines 60-66, with a fixed scale). ``labels`` [B] are answer ids:
    an answer whose id equals the positive's (the same answer sentence, or a pair repeated by RS-RP along
    dim 0) is no negative and is masked out.
    """

    def __init__(self, encoder, num_labels: int = 1):
        super().__init__(encoder, 1)

    def embed(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None, **kwargs):
        h = self._hidden(input_ids, attention_mask, token_type_ids, inputs_embeds, **kwargs)
        return nn.functional.normalize(self._mean_pool(h, attention_mask).float(), dim=-1)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None,
                labels=None, **kwargs):
        z = self.embed(input_ids, attention_mask, token_type_ids, inputs_embeds, **kwargs)
        if z.shape[0] % 2:
            raise ValueError(f"dual encoder: {z.shape[0]} rows is not a whole number of (question, answer) pairs")
        logits = RETRIEVAL_LOGIT_SCALE * z[0::2] @ z[1::2].T
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            if labels.shape[0] != logits.shape[0]:
                raise ValueError(f"dual encoder: {labels.shape[0]} answer ids for {logits.shape[0]} pairs")
            eye = torch.eye(len(labels), dtype=torch.bool, device=logits.device)
            logits = logits.masked_fill((labels[:, None] == labels[None, :]) & ~eye, MASKED_LOGIT)
            loss = nn.functional.cross_entropy(logits, torch.arange(len(labels), device=logits.device))
        return SequenceClassifierOutput(loss=loss, logits=logits)


HEAD_KINDS: Registry[type] = Registry("head kind")
for _kind, _head in (("token_classification", TokenClassifier), ("span_extraction", SpanExtractor),
                     ("multiple_choice", MultipleChoice), ("answer_retrieval", DualEncoder)):
    HEAD_KINDS.add(_kind, _head)


def load_head(kind: str, model_name: str, num_labels: int):
    """Encoder ``model_name`` (hub name, path or offline name) with a fresh ``kind`` head.

    ``num_labels``: tag count (token_classification), 2 (span_extraction), the number of
    choices (multiple_choice); the dual encoder (answer_retrieval) ignores it. The encoder is loaded as in ``load_classifier`` (no pooler).
    """

    head = HEAD_KINDS.get(kind)
    try:
        encoder = AutoModel.from_pretrained(resolve_model(model_name), add_pooling_layer=False)
    except OSError as exc:
        raise hub_error(model_name, exc) from exc
    return head(encoder, num_labels)


HEAD_POOLING = ("mean", "cls")


def load_classifier(name: str, num_labels: int, pooling: str = "mean"):
    """Encoder with a fresh sentence(-pair) classification head on mean-pooled or <s> (CLS-pooler) states."""

    if pooling not in HEAD_POOLING:
        raise ValueError(f"head pooling {pooling!r}: expected one of {HEAD_POOLING}")
    try:
        if pooling == "cls":
            return AutoModelForSequenceClassification.from_pretrained(resolve_model(name), num_labels=num_labels)
        encoder = AutoModel.from_pretrained(resolve_model(name), add_pooling_layer=False)
    except OSError as exc:
        raise hub_error(name, exc) from exc
    return MeanPoolClassifier(encoder, num_labels)
