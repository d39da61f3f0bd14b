"""A dispatcher in a process of its own, for a test to kill with SIGKILL mid-batch.

``python -m tests.datadog.dispatch_child DATABASE_URL DATADOG_URL`` claims one
batch (lease 1 s) and sends it to the Datadog intake with the real senders.
"""

from __future__ import annotations

import asyncio
import sys

from service.config import load_settings
from service.datadog.forwarder import open_datadog_senders
from service.outbox.dispatcher import Dispatcher, build_registry
from service.runtime import open_runtime


async def main(database_url: str, datadog_url: str) -> None:
    settings = load_settings(database_url=database_url, dd_api_key="k", datadog_url=datadog_url)
    async with (
        open_runtime(settings, pool_size=2) as runtime,
        open_datadog_senders(settings) as senders,
    ):
        dispatcher = Dispatcher(
            runtime.engine, runtime.sessionmaker, build_registry(senders), lease_s=1.0
        )
        print("claiming", flush=True)
        await dispatcher.dispatch_once()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
