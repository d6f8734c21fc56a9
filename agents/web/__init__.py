"""Web: the HTTP API and host pages every worker serves on Faust's web server.

:mod:`~agents.web.routes` registers the routes (rooms, profiles, recommendations, models,
anomalies, campaigns, schemas, health and metrics, the host's live page);
:mod:`~agents.web.auth` is the bearer-token middleware (API and per-room host tokens),
:mod:`~agents.web.errors` the middleware that turns every 4xx/5xx into JSON,
:mod:`~agents.web.limits` the HTTP limits (read timeouts, body cap, streams per token) and
request ids, and
:mod:`~agents.web.privacy` the consent, footprint and erasure endpoints. Imports are absolute,
so this package never shadows :mod:`faust.web` or :mod:`aiohttp.web`.
"""
