"""``python -m service``: run the writeback service with configuration from the environment;
``python -m service rekey``: re-seal every district secret with the first configured key.

Bad configuration is refused before anything starts (no database, no port): one line on
standard error naming every bad variable, and a non-zero exit status.
"""

import asyncio
import sys

from service.app import rekey, serve
from service.config import ConfigError, Settings

if __name__ == "__main__":
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise SystemExit(f"writeback: {exc}") from None
    if sys.argv[1:] == ["rekey"]:
        count = asyncio.run(rekey(settings))
        print(f"re-encrypted {count} secret values under the first key")
    elif sys.argv[1:]:
        raise SystemExit("usage: python -m service [rekey]")
    else:
        asyncio.run(serve(settings))
