"""The yardstick: a bare ``websockets`` asyncio server that answers every CALL with a fixed,
minimal CALLRESULT carrying the same unique id, and nothing else (no validation, no storage,
no logging). ``python -m bench.echo --host H --port P``; ends cleanly on SIGTERM.

Its CPU per message, measured in the same run with the same connections and frames, is what
the central system's own CPU per message is compared with.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


async def answer(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            try:
                frame = json.loads(message)
            except ValueError:
                continue
            if isinstance(frame, list) and len(frame) > 1 and frame[0] == 2:
                await ws.send(f'[3,"{frame[1]}",{{}}]')
    except ConnectionClosed:
        pass


async def run(host: str, port: int, ping_interval: float, ping_timeout: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        answer,
        host,
        port,
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        compression=None,
        ping_interval=ping_interval or None,
        ping_timeout=ping_timeout or None,
        max_size=1 << 20,
    ) as server:
        print(
            json.dumps({"event": "listening", "port": server.sockets[0].getsockname()[1]}),
            flush=True,
        )
        await stop.wait()
        server.close(close_connections=True)
        await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.echo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ping-interval", type=float, default=60.0)
    parser.add_argument("--ping-timeout", type=float, default=60.0)
    args = parser.parse_args()
    asyncio.run(run(args.host, args.port, args.ping_interval, args.ping_timeout))


if __name__ == "__main__":
    main()
