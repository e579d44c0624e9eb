"""A webhook receiver for `bench.notices`, in a process of its own so that it does not
take the load generator's CPU: records when each notice (by Idempotency-Key) first
arrived (time.time()), and serves them as JSON at GET /arrivals.

    python -m bench.webhook_receiver --port 8099
"""

from __future__ import annotations

import argparse
import time

from aiohttp import web


def app() -> web.Application:
    arrived: dict[str, float] = {}
    calls = [0]

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        calls[0] += 1
        arrived.setdefault(request.headers.get("Idempotency-Key", ""), time.time())
        return web.json_response({"id": str(calls[0])})

    async def arrivals(request: web.Request) -> web.Response:
        prefix = request.query.get("prefix", "")
        return web.json_response(
            {
                "calls": calls[0],
                "arrived": {k: t for k, t in arrived.items() if k.startswith(prefix)},
            }
        )

    application = web.Application()
    application.router.add_post("/hook", hook)
    application.router.add_get("/arrivals", arrivals)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
