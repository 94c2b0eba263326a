"""Server-side automations: rules evaluated on the live stream, alerts, webhooks.

``spec`` (what a rule is), ``engine`` (pure evaluation), ``schedule`` (time of day,
weekdays, cron), ``runtime`` (the worker's I/O around the engine), ``delivery``
(webhook sending)."""
