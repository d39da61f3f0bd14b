"""Imports every model module so ``Base.metadata`` describes the whole schema."""

from service.alerts import models as alerts_models
from service.datadog import models as datadog_models
from service.db import Base
from service.outbox import models as outbox_models
from service.state import models as state_models

metadata = Base.metadata

__all__ = ["alerts_models", "datadog_models", "metadata", "outbox_models", "state_models"]
