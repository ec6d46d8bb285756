#!/usr/bin/env python3
"""A persistent JSON-RPC 2.0 tool (one object per line), like a tool daemon.

Used by toolpool's demo, tests and benchmarks. `sleep` calls run in their own thread, so
replies can come back out of order when several are in flight; the rest are answered
inline, in order.

Methods: ping, echo, add [a, b], upper {"text"}, sleep {"ms", "value"}, fail {"code",
"message"}, notify {"text"} (sends a notification first), garbage (prints a non-JSON line
first), crash {"code"}, pid, nonce {"nonce"} (returns it with the pid), cancelled (the ids
named so far by `$/cancelRequest` or `notifications/cancelled` notifications).
Flags: --ready LINE (print LINE when started), --start-delay-ms N.
"""
import json
import os
import sys
import threading
import time

lock = threading.Lock()


# Ids named by cancel notifications, in arrival order.
CANCELLED = []


def emit(obj_or_text):
    line = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text)
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def handle(req):
    rid = req.get("id")
    method = req.get("method")
    params = req.get("params")
    try:
        if method == "ping":
            result = "pong"
        elif method == "echo":
            result = params
        elif method == "add":
            result = params[0] + params[1]
        elif method == "upper":
            result = params["text"].upper()
        elif method == "sleep":
            time.sleep(params.get("ms", 0) / 1000.0)
            result = params.get("value")
        elif method == "fail":
            emit({"jsonrpc": "2.0", "id": rid, "error": {
                "code": params.get("code", -32000), "message": params.get("message", "failed"),
                "data": {"params": params}}})
            return
        elif method == "notify":
            emit({"jsonrpc": "2.0", "method": "log", "params": {"text": params["text"]}})
            result = "notified"
        elif method == "garbage":
            emit("this is not json")
            emit('{"jsonrpc": "2.0", "id": "not-a-number", "result": 1}')
            result = "after garbage"
        elif method == "crash":
            sys.stderr.write("rpc_tool: crash requested\n")
            sys.stderr.flush()
            os._exit(params.get("code", 1) if params else 1)
        elif method == "pid":
            result = os.getpid()
        elif method == "cancelled":
            result = list(CANCELLED)
        elif method == "nonce":
            result = {"nonce": params["nonce"], "pid": os.getpid()}
        else:
            emit({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"method not found: {method}"}})
            return
    except Exception as e:  # a bad request is the caller's error, not a crash
        emit({"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": str(e)}})
        return
    emit({"jsonrpc": "2.0", "id": rid, "result": result})


def main():
    args = sys.argv[1:]
    if "--start-delay-ms" in args:
        time.sleep(int(args[args.index("--start-delay-ms") + 1]) / 1000.0)
    if "--ready" in args:
        emit(args[args.index("--ready") + 1])
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
        except ValueError:
            emit({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
            continue
        if "id" not in req:
            # A notification: remember the ids of cancelled requests ($/cancelRequest in
            # LSP, notifications/cancelled in MCP); `cancelled` returns them.
            params = req.get("params") or {}
            if req.get("method") in ("$/cancelRequest", "notifications/cancelled"):
                CANCELLED.append(params.get("id", params.get("requestId")))
            continue
        if req.get("method") == "sleep":
            # Only slow calls get a thread, so replies can overtake them; the rest are
            # answered inline, which keeps a round trip short.
            threading.Thread(target=handle, args=(req,), daemon=True).start()
        else:
            handle(req)
    for t in threading.enumerate():  # stdin closed: finish what is in flight
        if t is not threading.current_thread():
            t.join()


if __name__ == "__main__":
    main()
