"""Anomalies: per-second watches of rooms, users and the worker, and the incidents they open.

The pure parts depend one way, ``incidents <- watches <- monitor``:
:mod:`~agents.anomalies.incidents` turns per-sample signals into deduplicated incidents
(``IncidentTracker``, severities, the ``anomaly.v1`` records and their explanations);
:mod:`~agents.anomalies.watches` samples the metrics and scores them (``RoomWatch``,
``UserWatch``, ``SystemWatch``, their detectors, baselines and effect sizes);
:mod:`~agents.anomalies.monitor` is the ``AnomalyMonitor`` a worker runs (three watches,
one tracker). :mod:`~agents.anomalies.agent` wires the monitor into the worker (the
``livepulse.anomalies`` output, the per-second timer).
"""
