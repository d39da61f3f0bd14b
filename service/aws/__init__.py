"""Thin typed adapters over AWS: SQS, EventBridge, ECS, CloudWatch."""
