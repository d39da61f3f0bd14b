"""ecswatch's test suite; it mirrors the ``service`` package."""
