"""One blocking call run on an executor for asyncio, cancellable through a token: the one
way :mod:`toolpool.aio`'s pools and runs await the C API."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Callable, TypeVar

from ._cancel import CancelToken

__all__ = ["run_cancellable"]

T = TypeVar("T")


async def run_cancellable(executor: concurrent.futures.Executor, fn: Callable[[CancelToken], T]) -> T:
    """Run ``fn(token)`` (one blocking call taking ``cancel=token``) on ``executor``; if
    the awaiting task is cancelled, trigger the token, wait for the call to return (it
    takes milliseconds), and let the cancellation go on."""
    token = CancelToken()
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(executor, fn, token)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        token.cancel()
        # The C call returns within milliseconds; wait for it so nothing of it outlives
        # the task (its result or error, Cancelled, is dropped).
        while not fut.done():
            try:
                await asyncio.wait([fut])
            except asyncio.CancelledError:  # cancelled again: keep waiting, briefly
                pass
        if not fut.cancelled():
            fut.exception()  # retrieved, so asyncio does not log it
        raise
