"""Users: the user pipeline, the online profile it folds and the erasure of a user.

:mod:`~agents.users.pipeline` is the Faust side (``UserHandler``, ``register``: clicks and
re-keyed live activity -> profiles, models, promo decisions);
:mod:`~agents.users.profile` is the pure ``UserProfile`` (RFM, decay, tags, lifecycle) and
:mod:`~agents.users.store` the ``user-profiles`` table holding live profile objects;
:mod:`~agents.users.activity` is the batched ``user-activity`` hop format (room pipeline ->
user pipeline) and :mod:`~agents.users.erasure` applies ``livepulse forget`` requests on the
worker that owns the user.
"""
