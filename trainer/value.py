"""The value function: action probabilities -> one ranking score.

`value = sum_a weight[a] * P(a | history, item)`, e.g. P(click) + 10 P(like) - 100 P(downvote). Actions
without a weight count zero. Weights are configuration, so a product decision never needs retraining.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

DEFAULT_WEIGHTS = {"click": 1.0, "like": 10.0, "downvote": -100.0, "purchase": 1.0}


@dataclass(frozen=True)
class ValueFunction:
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    def vector(self, actions: Sequence[str]) -> torch.Tensor:
        """Weights in the vocabulary's action order; names the vocabulary lacks are an error."""
        unknown = set(self.weights) - set(actions)
        if unknown:
            raise ValueError(f"value weights name unknown actions {sorted(unknown)}; known: {list(actions)}")
        return torch.tensor([float(self.weights.get(a, 0.0)) for a in actions])

    def __call__(self, action_probs: torch.Tensor, actions: Sequence[str]) -> torch.Tensor:
        """[..., A] probabilities in `actions` order -> [...] values."""
        return action_probs @ self.vector(actions).to(action_probs.dtype)

    @classmethod
    def parse(cls, text: str) -> "ValueFunction":
        """'click=1,like=10,downvote=-100' -> ValueFunction."""
        weights = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, number = part.partition("=")
            if not sep:
                raise ValueError(f"value weight {part!r} is not name=number")
            try:
                weights[name.strip()] = float(number)
            except ValueError:
                raise ValueError(f"value weight {part!r}: {number!r} is not a number") from None
        return cls(weights)
