"""Test rig: real local HTTP stand-ins for AWS, Datadog and webhook receivers."""
