"""The pure event layer: message bodies in, typed ECS / CodeDeploy events out.

``envelope`` unwraps an SQS body (raw EventBridge event or SNS envelope) and checks
that it has the shape of an event; ``normalise`` turns the event into a
:class:`~service.events.models.NormalisedEvent` whose ``detail`` is one typed class
per detail-type (``models``). Nothing here does I/O: anything that can never be
processed raises :class:`~service.errors.PermanentError` with a one-line reason that
the consumer stores in the quarantine table.
"""
