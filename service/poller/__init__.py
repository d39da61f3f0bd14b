"""The poller role: reconciliation, CloudWatch metrics, CodeDeploy mapping, one leader."""
