"""ECS state: clusters, services, deployments, tasks, container instances, tags."""
