"""Webhooks: WaveSpeed's inbound v3 signatures."""
