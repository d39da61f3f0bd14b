"""ecswatch: async, event-driven monitoring for Amazon ECS."""

__version__ = "0.1.0"
