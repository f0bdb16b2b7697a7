"""Batching shared by training, scoring and the robustness checks: tokenization, length buckets, padding."""
from __future__ import annotations

import numpy as np
import torch

CPU_BATCH_TOKENS = 512  # padded tokens per inference batch on a CPU: 256-512 were fastest (see token_batches)


def tokenize_pairs(tokenizer, text_a: list[str], text_b: list[str] | None, max_length: int) -> list[list[int]]:
    enc = tokenizer(text_a, text_b, truncation=True, max_length=max_length, padding=False,
                    return_token_type_ids=False, return_attention_mask=False)
    return enc["input_ids"]


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                   chunk: int = 50) -> list[np.ndarray]:
    """Batches of similar length (little padding); shuffled chunks when training, sorted when evaluating."""
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    perm = rng.permutation(len(lengths))
    batches = []
    for s in range(0, len(perm), chunk * batch_size):
        part = perm[s:s + chunk * batch_size]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def token_batches(lengths: np.ndarray, batch_size: int, device: torch.device) -> list[np.ndarray]:
    """Row indices, longest first, in batches of at most ``batch_size`` rows and a budget of padded tokens:
    ``batch_size`` x the median length, on a CPU at most :data:`CPU_BATCH_TOKENS`. A forward pass costs its padded
    tokens, and on a CPU small batches also stay in cache: 300 + 300 Tatoeba de/en sentences (median 12, longest
    39 tokens) took 4.2 CPU s in fixed batches of 128 (13,676 padded tokens for 7,942), 3.0 s with the median
    budget and 2.7 s with 512 tokens (8,873; benchmarks/README.md). Scoring pairs uses it too."""
    order = np.argsort(-lengths, kind="stable")
    budget = batch_size * max(1, int(np.median(lengths)))
    if device.type == "cpu":
        budget = min(budget, CPU_BATCH_TOKENS)
    batches, start = [], 0
    while start < len(order):
        n = min(batch_size, max(1, budget // max(1, int(lengths[order[start]]))))  # the first is the longest
        batches.append(order[start : start + n])
        start += n
    return batches


def collate(ids: list[list[int]], pad_id: int, labels=None) -> dict[str, torch.Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, :len(x)] = torch.tensor(x)
        mask[i, :len(x)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if labels is not None:
        batch["labels"] = torch.as_tensor(labels, dtype=torch.long)
    return batch
