"""Build glue that pyproject.toml cannot say: ship the top-level ``alembic/`` inside the package.

The migrations stay where Alembic users look for them (``alembic/`` at the top of
the repository), and the wheel carries them as ``service.migrations``, so that
``ecswatch db upgrade`` and ``ecswatch run`` work from an installed package with
no checkout. Everything else about the build lives in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["service", "service.*"]),
        "service.migrations",
        "service.migrations.versions",
    ],
    package_dir={"service.migrations": "alembic"},
)
