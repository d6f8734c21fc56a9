"""Promo: campaign-driven triggers on the user pipeline.

:mod:`~agents.promo.campaigns` is the pure part (campaign definitions compiled to closures,
the ``CampaignBook``, per-event ``Decider`` decisions and attribution statistics; no Faust,
no I/O); :mod:`~agents.promo.triggers` is its wiring into the worker (``PromoTriggers``:
consent, runtime campaign updates, ``promo-triggers`` and ``attribution`` outputs, the
``promo-state`` and ``promo-budget`` tables).
"""
