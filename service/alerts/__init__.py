"""Alerts and signed webhook deliveries (Standard Webhooks)."""
