#!/usr/bin/env python3
"""A TCP forwarder that can add latency to one link, for tests/faults/run.sh.

This kernel has no `netem` qdisc, so latency on a link is made here: the
fault test puts this proxy on the path of the link it wants to slow (in
front of Garage for "Garage slow", between node1 and PostgreSQL for the
node-PostgreSQL latency case) and raises its delay while the fault lasts.

  linkproxy.py --listen HOST:PORT --upstream HOST:PORT --control FILE \
               [--mark N] [--max-secs S]

Every byte from the upstream back to the client is held DELAY ms before it
is written on (DELAY read from FILE, a number of milliseconds, every
0.2 s; absent or unreadable: 0), so each request-answer round trip on the
link takes DELAY ms longer. Bytes keep their order and are pipelined (a
chunk read at t leaves at t + DELAY, whatever came before), so the
bandwidth stays what it was, as with netem's `delay`. Bytes towards the
upstream pass at once. A change of DELAY applies to connections already
open, not only to new ones (a pooled database connection feels it too).

Owns: its listening socket and the connection pairs it forwards. Must
never: buffer without a bound (a pair's queue holds at most 4 MiB, then
reading pauses), change a byte, or outlive --max-secs (it exits by
itself; the test also stops it). --mark sets SO_MARK on the upstream
sockets (for a firewall rule that must tell them apart).
"""

import argparse
import asyncio
import collections
import os
import signal
import socket
import sys
import time

CHUNK = 64 * 1024
QUEUE_BYTES = 4 * 1024 * 1024

DELAY = 0.0  # seconds, current


def split(addr):
    host, _, port = addr.rpartition(":")
    return host, int(port)


async def watch_control(path):
    global DELAY
    while True:
        try:
            with open(path) as f:
                DELAY = max(0.0, float(f.read().strip() or 0) / 1000.0)
        except (OSError, ValueError):
            DELAY = 0.0
        await asyncio.sleep(0.2)


async def plain(reader, writer):
    """Client -> upstream: at once."""
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        writer.close()


async def delayed(reader, writer):
    """Upstream -> client: each chunk held DELAY from when it was read."""
    queue = collections.deque()
    queued = 0
    more = asyncio.Event()
    room = asyncio.Event()
    room.set()
    done = False

    async def pump_in():
        nonlocal queued, done
        try:
            while True:
                await room.wait()
                data = await reader.read(CHUNK)
                if not data:
                    break
                queue.append((time.monotonic() + DELAY, data))
                queued += len(data)
                if queued >= QUEUE_BYTES:
                    room.clear()
                more.set()
        except (OSError, RuntimeError):
            pass
        done = True
        more.set()

    feeder = asyncio.ensure_future(pump_in())
    try:
        while True:
            if not queue:
                if done:
                    break
                more.clear()
                await more.wait()
                continue
            due, data = queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            queue.popleft()
            queued -= len(data)
            if queued < QUEUE_BYTES:
                room.set()
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        writer.close()
    finally:
        feeder.cancel()


async def handle(client_r, client_w, upstream, mark):
    host, port = upstream
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if mark:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        sock.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), 10)
        up_r, up_w = await asyncio.open_connection(sock=sock)
    except (OSError, asyncio.TimeoutError):
        client_w.close()
        return
    try:
        await asyncio.gather(plain(client_r, up_w), delayed(up_r, client_w), return_exceptions=True)
    finally:
        for w in (up_w, client_w):
            try:
                w.close()
            except (OSError, RuntimeError):
                pass


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--control", required=True)
    p.add_argument("--mark", type=int, default=0)
    p.add_argument("--max-secs", type=float, default=3600)
    a = p.parse_args()
    upstream = split(a.upstream)
    host, port = split(a.listen)
    asyncio.ensure_future(watch_control(a.control))
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, upstream, a.mark), host, port, reuse_address=True, backlog=512
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    print(f"linkproxy {a.listen} -> {a.upstream} (control {a.control}), pid {os.getpid()}", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), a.max_secs)
    except asyncio.TimeoutError:
        print("linkproxy: --max-secs reached, exiting", flush=True)
    server.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
