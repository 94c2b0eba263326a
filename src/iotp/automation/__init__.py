"""Automation rules as pure logic: ``spec`` (what a rule is), ``engine`` (evaluation on
the live stream, no I/O), ``schedule`` (time of day, weekdays, cron). The worker runs
them (iotp.worker.automations); webhooks are sent by iotp.services.webhook_delivery."""
