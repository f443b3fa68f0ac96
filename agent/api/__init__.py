"""The local operator API (aiohttp.web) and the small client the CLI uses to call it."""
