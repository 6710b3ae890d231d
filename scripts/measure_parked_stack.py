"""Heap bytes per parked gevent greenlet, by how it is called and where it parks (tracemalloc).

A websocket's request greenlet stays parked for the socket's whole life, and greenlet keeps the C
stack below the park on the heap. This measures what the choices in app/wsgi_layers.py and
app/upstream/wakeup.py are worth, without uWSGI:
- N greenlets each called through D WSGI-style layers, as instances with ``__call__`` or as
  bound methods, then parked in ``Event.wait()``;
- N greenlets parked directly in ``Event.wait()``, ``Waiter.get()`` or the kit's ``Wakeup.wait()``.

Run: .venv/bin/python scripts/measure_parked_stack.py [--greenlets 2000]
Prints one JSON object (bytes per greenlet, the greenlet object included). Measurement only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event
from gevent.hub import Waiter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.upstream.wakeup import Wakeup


class Layer:
    def __init__(self, inner: Callable[[Any], Any]) -> None:
        self.inner = inner

    def __call__(self, arg: Any) -> Any:
        return self.inner(arg)


def chain(depth: int, bound: bool) -> Callable[[Any], Any]:
    def leaf(event: Any) -> Any:
        return event.wait()

    fn: Callable[[Any], Any] = leaf
    for _ in range(depth):
        layer = Layer(fn)
        fn = layer.__call__ if bound else layer
    return fn


def per_greenlet(n: int, target: Callable[[Any], Any], make: Callable[[], Any]) -> int:
    parks = [make() for _ in range(n)]
    gevent.sleep(0)
    before = tracemalloc.take_snapshot()
    greenlets = [gevent.spawn(target, p) for p in parks]
    gevent.sleep(0.05)
    gevent.sleep(0.05)
    after = tracemalloc.take_snapshot()
    size = sum(s.size_diff for s in after.compare_to(before, "filename"))
    gevent.killall(greenlets)
    return round(size / n)


class WaiterPark:
    def __init__(self) -> None:
        self.waiter = Waiter()

    def wait(self) -> Any:
        return self.waiter.get()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--greenlets", type=int, default=2000)
    args = ap.parse_args()
    tracemalloc.start()
    out: dict[str, Any] = {"greenlets": args.greenlets, "python": sys.version.split()[0], "gevent": gevent.__version__}
    out["layers_as_instances"] = {d: per_greenlet(args.greenlets, chain(d, False), Event) for d in (0, 2, 4, 8)}
    out["layers_as_bound_methods"] = {d: per_greenlet(args.greenlets, chain(d, True), Event) for d in (0, 2, 4, 8)}
    out["park"] = {
        "Event.wait": per_greenlet(args.greenlets, lambda p: p.wait(), Event),
        "Waiter.get": per_greenlet(args.greenlets, lambda p: p.wait(), WaiterPark),
        "Wakeup.wait": per_greenlet(args.greenlets, lambda p: p.wait(), Wakeup),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
