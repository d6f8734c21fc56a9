"""Variant weights of ``mode: bandit`` campaigns: Thompson sampling on the feedback counts.

Each variant of a bandit campaign has a Beta posterior of its objective rate per exposure
(``shown`` feedback): ``Beta(1 + successes, 1 + shown - successes)`` where a success is a
``clicked`` (``objective: click``) or ``converted`` (``objective: conversion``) record. The
counts are those :class:`agents.promo.feedback.CampaignReports` folds from the whole
feedback topic, so every worker sees the same ones.

**Batched Thompson sampling.** Drawing one sample per posterior for each trigger and sending
the best variant is Thompson sampling; its assignment probabilities are each variant's
probability of being the best. Here those probabilities are estimated once per
``update_every`` feedback records of the campaign (default 100) by a seeded Monte Carlo
(``draws`` samples of every posterior; the seed is a hash of the campaign and its counts),
floored at ``min_weight`` (default 0.02: no variant is ever starved) and used as the
variants' weights until the next update. A user is placed on the weights by a hash of
(campaign, user) (:meth:`agents.promo.campaigns.Campaign.assign`), so:

* the weights are a pure function of the counts (same counts, same weights, on every worker);
* a redelivered event picks the same variant as long as the weights did not change (and the
  decider re-sends the stored trigger anyway, with its variant);
* the holdout is decided before the variant and never by the bandit: held-out users get no
  trigger whatever the weights.

>>> import numpy as np
>>> p = probability_best([(1 + 60, 1 + 940), (1 + 40, 1 + 960)], draws=4000, seed=1)
>>> round(float(p[0]), 2) > 0.95, float(np.sum(p))
(True, 1.0)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from agents.promo.campaigns import Campaign

DRAWS = 4000           # Monte Carlo samples per weight update
REPORT_DRAWS = 20000   # ... per report (probability each variant is best)


def seed_of(*parts: Any) -> int:
    """A 64-bit seed from ``parts`` (same on every worker and run)."""
    raw = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


def probability_best(params: Sequence[tuple[float, float]], draws: int = DRAWS,
                     seed: int = 0) -> np.ndarray:
    """Monte Carlo estimate of P(variant i has the highest rate) under independent
    ``Beta(alpha_i, beta_i)`` posteriors, seeded (deterministic)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    alpha = np.array([a for a, _ in params], dtype=float)
    beta = np.array([b for _, b in params], dtype=float)
    samples = rng.beta(alpha, beta, size=(draws, len(params)))
    wins = np.bincount(samples.argmax(axis=1), minlength=len(params))
    return wins / draws


def posteriors(campaign: Campaign, counts: Mapping[str, Mapping[str, float]]
               ) -> list[tuple[float, float]]:
    """Beta(1 + successes, 1 + failures) of each variant's objective rate per exposure.

    >>> c = Campaign.from_dict({"id": "c", "on": ["like"], "action": "ad", "mode": "bandit",
    ...                         "variants": [{"id": "A"}, {"id": "B"}]})
    >>> posteriors(c, {"A": {"shown": 10, "clicked": 2}})
    [(3.0, 9.0), (1.0, 1.0)]
    """
    success = "clicked" if campaign.objective == "click" else "converted"
    out = []
    for variant in campaign.variants:
        row = counts.get(variant.id) or {}
        shown, won = float(row.get("shown", 0)), float(row.get(success, 0))
        won = min(won, shown)
        out.append((1.0 + won, 1.0 + shown - won))
    return out


def floored(p: Sequence[float], floor: float) -> tuple[float, ...]:
    """``p`` with every share raised to at least ``floor``, taken from the shares above it.

    >>> floored([1.0, 0.0, 0.0], 0.05)
    (0.9, 0.05, 0.05)
    """
    p = [float(x) for x in p]
    low = [i for i, x in enumerate(p) if x < floor]
    if not low:
        return tuple(p)
    high = [i for i in range(len(p)) if i not in low]
    need = floor * len(low) - sum(p[i] for i in low)
    spare = sum(p[i] - floor for i in high)
    return tuple(floor if i in low else p[i] - need * (p[i] - floor) / spare
                 for i in range(len(p)))


class Bandits:
    """Current weights of every bandit campaign, updated from the feedback counts.

    ``campaign_of(id)`` finds a campaign in force; ``counts_of(id)`` gives its per-variant
    feedback counts (``CampaignReports.variant_counts``). Call :meth:`on_feedback` after
    each record folded; :meth:`weights` is the decider's ``weights``.
    """

    def __init__(self, campaign_of: Callable[[str], Campaign | None],
                 counts_of: Callable[[str], Mapping[str, Mapping[str, float]]],
                 draws: int = DRAWS) -> None:
        self.campaign_of, self.counts_of, self.draws = campaign_of, counts_of, draws
        self._pending: dict[str, int] = {}
        # campaign id -> (variant ids, version, weights)
        self._current: dict[str, tuple[tuple[str, ...], int, tuple[float, ...]]] = {}
        self.updates = 0

    def on_feedback(self, campaign_id: str) -> None:
        """One more feedback record of ``campaign_id`` was folded."""
        pending = self._pending.get(campaign_id, 0) + 1
        campaign = self.campaign_of(campaign_id)
        if campaign is None or campaign.mode != "bandit":
            return
        if pending >= campaign.bandit_every:
            self.update(campaign)
            pending = 0
        self._pending[campaign_id] = pending

    def update(self, campaign: Campaign) -> tuple[float, ...]:
        """Recompute the campaign's weights from its counts now."""
        params = posteriors(campaign, self.counts_of(campaign.id))
        seed = seed_of(campaign.id, campaign.version, *(x for ab in params for x in ab))
        p = probability_best(params, self.draws, seed)
        weights = floored(p, campaign.min_weight)
        self._current[campaign.id] = (tuple(v.id for v in campaign.variants),
                                      campaign.version, weights)
        self.updates += 1
        return weights

    def weights(self, campaign: Campaign) -> tuple[float, ...]:
        """The weights to assign by: a bandit's current ones (the configured ones until
        its first update, or after its variants changed), else the configured ones."""
        if campaign.mode != "bandit":
            return campaign.weights
        found = self._current.get(campaign.id)
        if found is None or found[1] != campaign.version or found[0] != tuple(
                v.id for v in campaign.variants):
            return campaign.weights
        return found[2]

    def describe(self, campaign: Campaign) -> dict[str, Any]:
        """The variants' current weights and their probability of being the best (seeded
        Monte Carlo of the posteriors: same counts, same figures)."""
        params = posteriors(campaign, self.counts_of(campaign.id))
        seed = seed_of("report", campaign.id, *(x for ab in params for x in ab))
        p = probability_best(params, REPORT_DRAWS, seed) if params else []
        weights = self.weights(campaign)
        return {v.id: {"weight": round(weights[i], 6), "p_best": round(float(p[i]), 4),
                       "posterior": [params[i][0], params[i][1]]}
                for i, v in enumerate(campaign.variants)}
