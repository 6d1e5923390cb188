"""``[web] request_threads``: the real server runs page and API handlers in that many threads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio.to_thread
import httpx2 as httpx
import pytest

from xrayd.web.server import WebServer

from web_helpers import make_web


async def _limit() -> float:
    return anyio.to_thread.current_default_thread_limiter().total_tokens


@pytest.mark.parametrize("threads", [None, 2])
def test_the_server_handles_at_most_request_threads_requests_at_once(
    tmp_path: Path, threads: int | None
) -> None:
    web_settings: dict[str, object] = {"host": "127.0.0.1", "port": 0}
    if threads is not None:
        web_settings["request_threads"] = threads
    web = make_web(tmp_path / "data", web=web_settings)
    server = WebServer(web.ctx)
    server.start()
    try:
        # answered: the server's loop runs (and set its limit before it served anything)
        assert httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=30).status_code == 200
        assert server.loop is not None
        limit = asyncio.run_coroutine_threadsafe(_limit(), server.loop).result(timeout=30)
        assert limit == (threads or 4)  # 4: the default, not anyio's 40
    finally:
        server.stop(timeout=10)
        web.storage.engine.dispose()
