"""The deployment lifecycle: rolling, ECS native blue/green and CodeDeploy blue/green.

The pure fold and what the lifecycle decides (``outcome``, ``rows``, ``rules``,
``snapshot``), the upsert that implements the fold (``upsert``), the
transitions decided from state (``transitions``), and the one snapshot of each
deployment read after a transaction's writes (``reads``, ``lifecycle``); see
docs/architecture.md, "The deployment lifecycle".
"""
