"""ecswatch: async, event-driven monitoring for Amazon ECS.

``__version__`` is the package's only version: the build reads it (pyproject.toml,
``[tool.setuptools.dynamic]``) and ``ecswatch --version`` prints it. Releases
follow CHANGELOG.md and docs/deploy.md, "Versions and the changelog".
"""

__version__ = "0.1.0"
