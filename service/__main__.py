"""``python -m service``: run the writeback service with configuration from the environment.

Bad configuration is refused before anything starts (no database, no port): one line on
standard error naming every bad variable, and a non-zero exit status.
"""

import asyncio

from service.app import serve
from service.config import ConfigError, Settings

if __name__ == "__main__":
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise SystemExit(f"writeback: {exc}") from None
    asyncio.run(serve(settings))
