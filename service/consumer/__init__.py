"""The consumer: SQS messages in, one transaction of state, deployments, alerts and
Datadog facts committed, then delete (assembled by :mod:`service.roles.consumer`)."""
