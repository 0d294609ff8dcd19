"""Paired datasets for unlearning: each item is one forget example plus a retain example
(and an "I don't know" rewrite of the forget question for IdkDPO)."""

from __future__ import annotations

import random

import torch

from ..data.formatting import pad_batch

GROUPS = ("forget", "retain", "idk")


class UnlearnDataset(torch.utils.data.Dataset):
    """Length = the forget (or finetune) set. Retain examples are drawn in a seeded random
    order that keeps cycling, so every retain example is used over a run, not only the first
    len(forget) of them."""

    def __init__(self, forget: list[dict], retain: list[dict] | None = None,
                 idk: list[dict] | None = None, seed: int = 0):
        if not forget:
            raise ValueError("the forget set is empty")
        self.forget, self.retain, self.idk = forget, retain or [], idk or []
        self._rng = random.Random(seed)
        self._order: list[int] = []

    def __len__(self):
        return len(self.forget)

    def _next_retain(self) -> dict:
        if not self._order:
            self._order = list(range(len(self.retain)))
            self._rng.shuffle(self._order)
        return self.retain[self._order.pop()]

    def __getitem__(self, i):
        item = {"forget": self.forget[i]}
        if self.retain:
            item["retain"] = self._next_retain()
        if self.idk:
            item["idk"] = self.idk[i]
        # Trainer's group_by_length reads this key
        item["input_ids"] = self.forget[i]["input_ids"]
        return item


class PairCollator:
    """Pads each group separately into forget_input_ids, retain_labels, ..."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        out = {}
        for group in GROUPS:
            if group in items[0]:
                for key, value in pad_batch([it[group] for it in items], self.pad_id).items():
                    out[f"{group}_{key}"] = value
        return out


def group(inputs: dict, name: str) -> dict | None:
    """The model inputs of one group, or None if the batch has no such group."""
    if f"{name}_input_ids" not in inputs:
        return None
    return {k: inputs[f"{name}_{k}"] for k in ("input_ids", "attention_mask", "labels")}
