"""Alerts: anomalies of closed candles and crossed price rules, raised by the platform's scorer and
delivered to the `alerts` topic, PostgreSQL and a webhook."""
