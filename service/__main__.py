"""``python -m service``: run the writeback service with configuration from the environment."""

import asyncio

from service.app import serve

if __name__ == "__main__":
    asyncio.run(serve())
