"""The Python side of benches/pool.rs: toolpool's Python binding against a pure-Python pool,
on the same C echo child and line, in one process per block (benches/pool.rs runs it pinned
and unpinned, interleaved with the Rust request it is compared with).

    pybench.py lat  CHILD LINE WARMUP N             per-call samples (us) of each latency path
    pybench.py tput CHILD LINE WARMUP N INSTANCES   calls and wall time of each throughput path

Latency paths: ``main`` (``pool.request`` from the main thread), ``worker`` (from another
thread), ``purepy`` (the pure-Python pool from the main thread), ``aio_seq`` (``await
pool.request`` one at a time on an ``aio.Pool``). Throughput paths: ``py_4x4`` (INSTANCES
threads, routed ``pool.request`` over INSTANCES instances, N calls each), ``purepy_4x4``
(the same on the pure-Python pool), ``aio_gather`` (one ``asyncio.gather`` of
``min(5000, N x INSTANCES)`` requests over INSTANCES instances). Prints one JSON object: ``{path: {"samples_us": [...],
"wall_us": W, "calls": C}}``.

The pure-Python pool is the design toolpool grew from: one ``subprocess.Popen`` per
instance with a reader thread that puts each stdout line on that instance's
``queue.Queue``; a caller takes a free instance from a ``queue.Queue``, writes its line,
waits on the reply queue and gives the instance back.
"""

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import time

import toolpool
from toolpool import aio

TIMEOUT = 10.0


class PurePool:
    """Popen + a reader thread per instance + Queues."""

    def __init__(self, argv, count):
        self.procs, self.replies = [], []
        self.free = queue.Queue()
        for i in range(count):
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
            q = queue.Queue()
            threading.Thread(target=self._read, args=(p.stdout, q), daemon=True).start()
            self.procs.append(p)
            self.replies.append(q)
            self.free.put(i)

    @staticmethod
    def _read(stdout, q):
        for line in stdout:
            q.put(line)

    def request(self, line):
        i = self.free.get(timeout=TIMEOUT)
        try:
            self.procs[i].stdin.write(line.encode() + b"\n")
            return self.replies[i].get(timeout=TIMEOUT).decode()[:-1]
        finally:
            self.free.put(i)

    def close(self):
        for p in self.procs:
            p.stdin.close()
            p.wait()


def samples(call, warmup, n, line):
    for _ in range(warmup):
        assert call(line) == line
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t = clock()
        reply = call(line)
        out.append((clock() - t) / 1000)
        assert reply == line, reply
    return {"samples_us": out, "wall_us": sum(out), "calls": n}


def on_thread(f):
    box = []
    t = threading.Thread(target=lambda: box.append(f()))
    t.start()
    t.join()
    return box[0]


async def aio_samples(pool, warmup, n, line):
    for _ in range(warmup):
        assert await pool.request(line) == line
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t = clock()
        reply = await pool.request(line)
        out.append((clock() - t) / 1000)
        assert reply == line, reply
    return {"samples_us": out, "wall_us": sum(out), "calls": n}


def threads(call, count, warmup, n, line):
    """`count` threads, `n` calls each after a warm-up; wall time from the common start."""
    ready = threading.Barrier(count + 1)
    go = threading.Event()
    errors = []
    samples = []

    def run():
        mine = []
        samples.append(mine)
        try:
            for _ in range(warmup):
                assert call(line) == line
            ready.wait()
            go.wait()
            clock = time.perf_counter_ns
            for _ in range(n):
                t = clock()
                reply = call(line)
                mine.append((clock() - t) / 1000)
                assert reply == line, reply
        except BaseException as e:  # reported below
            errors.append(e)

    ts = [threading.Thread(target=run) for _ in range(count)]
    for t in ts:
        t.start()
    ready.wait()
    t0 = time.perf_counter_ns()
    go.set()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    wall = (time.perf_counter_ns() - t0) / 1000
    return {"samples_us": [x for mine in samples for x in mine], "wall_us": wall, "calls": n * count}


async def aio_gather(pool, warmup, total, line):
    await asyncio.gather(*(pool.request(line) for _ in range(warmup)))
    t0 = time.perf_counter_ns()
    replies = await asyncio.gather(*(pool.request(line) for _ in range(total)))
    wall = (time.perf_counter_ns() - t0) / 1000
    assert all(r == line for r in replies)
    return {"samples_us": [], "wall_us": wall, "calls": total}


def main():
    mode, child, line = sys.argv[1], sys.argv[2], sys.argv[3]
    warmup, n = int(sys.argv[4]), int(sys.argv[5])
    out = {}
    if mode == "lat":
        with toolpool.Pool({"command": [child], "count": 1}) as pool:
            out["main"] = samples(pool.request, warmup, n, line)
            out["worker"] = on_thread(lambda: samples(pool.request, warmup, n, line))
        pure = PurePool([child], 1)
        out["purepy"] = samples(pure.request, warmup, n, line)
        pure.close()

        async def seq():
            async with aio.Pool({"command": [child], "count": 1}) as pool:
                return await aio_samples(pool, warmup, n, line)

        out["aio_seq"] = asyncio.run(seq())
    elif mode == "tput":
        count = int(sys.argv[6])
        with toolpool.Pool({"command": [child], "count": count}) as pool:
            out["py_4x4"] = threads(pool.request, count, warmup, n, line)
        pure = PurePool([child], count)
        out["purepy_4x4"] = threads(pure.request, count, warmup, n, line)
        pure.close()

        async def gather():
            async with aio.Pool({"command": [child], "count": count}) as pool:
                return await aio_gather(pool, warmup, min(5000, n * count), line)

        out["aio_gather"] = asyncio.run(gather())
    else:
        sys.exit(f"pybench.py: unknown mode {mode!r}")
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    sys.stdout = os.fdopen(sys.stdout.fileno(), "w", closefd=False)
    main()
