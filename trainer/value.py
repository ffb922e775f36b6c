"""The value function: action probabilities -> one ranking score.

`value = sum_a weight[a] * P(a | history, item)`, e.g. P(click) + 10 P(like) - 100 P(downvote). Actions
without a weight count zero. Weights are configuration, so a product decision never needs retraining.

The defaults below cover every action name the project's catalogues declare; a catalogue uses the ones its
vocabulary has. Live/synthetic actions: click 1, like 10, downvote -100 (a rare, costly signal), purchase 1.
MovieLens (ratings mapped 1-2 dislike, 3 neutral, 4 like, 5 love): love 20, like 10, neutral 0, dislike -20,
roughly the shape of the exponential gain 2^rating - 1 around a neutral rating (31, 15, 7, 1-3), so ordering
by the value approximates ordering by expected gain, with a dislike counted as a loss.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

DEFAULT_WEIGHTS = {"click": 1.0, "like": 10.0, "downvote": -100.0, "purchase": 1.0,
                   "love": 20.0, "neutral": 0.0, "dislike": -20.0}


@dataclass(frozen=True)
class ValueFunction:
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    @classmethod
    def defaults_for(cls, actions: Sequence[str]) -> "ValueFunction":
        """The default weights of the actions a vocabulary declares (others count zero)."""
        return cls(default_weights(actions))

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


def default_weights(actions: Sequence[str]) -> dict[str, float]:
    """DEFAULT_WEIGHTS restricted to `actions` (a catalogue's vocabulary)."""
    return {a: w for a, w in DEFAULT_WEIGHTS.items() if a in actions}
