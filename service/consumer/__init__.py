"""The consumer role: SQS messages in, committed state out, then delete."""
