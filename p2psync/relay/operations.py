"""What an operator's tools ask a relay process: `GET /healthz` and `GET /metrics`.

`/healthz` is on the relay's own port (a load balancer or nginx asks it there) and on the metrics
address: no token, no protocol header, plain text of one line. 200 when the database answered a
ping within HEALTH_SECONDS; 503 when it did not, or while the process is stopping. The answer
names the kind of failure (a timeout, the exception's class), never a URL, a user or a message
from the database, which may name hosts; the full error goes to the relay's log.

`/metrics` (the Prometheus text format, relay/metrics.py) is served only on a second address of
its own, `relay serve --metrics-listen 127.0.0.1:9741`, never on the public port: request counts
per route tell an outsider how busy the relay is and when its users sync, and behind a reverse
proxy a scrape of the public address would reach a different process each time. Prometheus
scrapes each relay process on its metrics address directly; without --metrics-listen there is
no /metrics at all.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from p2psync.relay.metrics import CONTENT_TYPE
from p2psync.relay.server import HEALTHZ, RELAY, Relay, log

METRICS = "/metrics"
HEALTH_SECONDS = 5.0  # a database that takes longer to answer SELECT 1 cannot serve a sync either
NO_STORE = {"Cache-Control": "no-store"}


def _text(status: int, line: str) -> web.Response:
    return web.Response(status=status, text=line + "\n", content_type="text/plain", headers=NO_STORE)


async def healthz(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    if relay.draining:
        return _text(503, "stopping: this relay process finishes the requests in flight and takes no new ones.")
    start = time.perf_counter()
    try:
        await asyncio.wait_for(relay.call(relay.storage.ping), HEALTH_SECONDS)
    except TimeoutError:
        log.warning("healthz: the database did not answer a ping within %s s", HEALTH_SECONDS)
        return _text(503, f"unavailable: the database did not answer a ping within {HEALTH_SECONDS:g} s.")
    except Exception as exc:
        log.warning("healthz: the database ping failed: %r", exc)
        return _text(503, f"unavailable: the database did not answer a ping ({type(exc).__name__}; see the log).")
    return _text(200, f"ok: the database answered a ping in {(time.perf_counter() - start) * 1000:.1f} ms.")


async def metrics(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    body = relay.metrics.render(relay.in_flight, relay.draining)
    response = web.Response(body=body, headers=NO_STORE)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


def metrics_app(relay: Relay) -> web.Application:
    """The application on --metrics-listen: /metrics and /healthz of the relay `relay`. It does
    not own the relay: the main application's cleanup closes it."""
    app = web.Application()
    app[RELAY] = relay
    app.router.add_get(METRICS, metrics)
    app.router.add_get(HEALTHZ, healthz)
    return app
