"""One host process of the shared-limit test (test_service.py): hammers the tools of a
`toolpool serve` service for a while and prints what happened as one JSON line.

    python3 hammer.py SOCKET NAME TOOLS SECONDS

TOOLS is a comma-separated list of tool ids whose replies carry the prefix "<tool>:"
(the test tool's --prefix). Round r sends a burst of requests to tool TOOLS[(k + r) % n],
k being the number in NAME, each carrying a nonce that must come back in its own reply.
The Go twin is bindings/go/internal/servicehost."""

import json
import re
import sys
import time

import toolpool

BURST = 5
TIMEOUT = 60.0


def main() -> None:
    socket, name, tools, seconds = sys.argv[1], sys.argv[2], sys.argv[3].split(","), float(sys.argv[4])
    start = int(re.sub(r"\D", "", name) or 0)
    ok, errors, wrong = 0, [], []
    with toolpool.connect(socket) as client:
        pools = {t: client.pool(t) for t in tools}
        until = time.monotonic() + seconds
        r = 0
        while time.monotonic() < until:
            tool = tools[(start + r) % len(tools)]
            for k in range(BURST):
                nonce = f"{name}-{r}-{k}"
                try:
                    reply = pools[tool].request(f"delay:2:{nonce}", TIMEOUT)
                except toolpool.ToolpoolError as e:
                    errors.append({"status": e.status, "message": e.message})
                    continue
                if reply == f"{tool}:{nonce}":
                    ok += 1
                else:
                    wrong.append({"sent": nonce, "tool": tool, "got": reply})
            r += 1
        for p in pools.values():
            p.close()
    print(json.dumps({"name": name, "ok": ok, "errors": errors, "wrong": wrong}), flush=True)


if __name__ == "__main__":
    main()
