"""Deployment model: rolling, ECS native blue/green and CodeDeploy blue/green."""
