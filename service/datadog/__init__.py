"""Datadog forwarding: metric registry, tags, batching, senders, gauges and install."""
