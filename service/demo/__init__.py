"""Local stand-ins for external services (AWS, Datadog, webhook receivers) for demo and tests."""
