"""The poller's jobs: reconciliation, CloudWatch metrics, CodeDeploy mapping, one leader
(assembled into the ``poller`` role by :mod:`service.roles.poller`)."""
