"""The Prometheus text exposition of the agent's metrics, produced in slices.

``prometheus_client.generate_latest`` builds every sample of a family as an object before writing
one line: at 2,000 machines (a poll-duration histogram per machine) that was 0.6 s in one go, on the
event loop; in a worker thread it starved the loop of the GIL for even longer (1.2-1.5 s stalls
measured). Here each child's current values are read and written straight into text, and the
caller yields to the loop between slices of children. The values are read through
prometheus_client's own metric objects (their children, buckets and sums: attributes of the
pinned version, checked by tests/test_metrics.py against ``generate_latest`` as the reference).
``_created`` series are left out (optional in the format, and a third of the text).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.utils import floatToGoString

SLICE = 100  # children per slice: 200 took 12-17 ms at 5,000 machines (bench/stalls.py)


def _num(value: float) -> str:
    """A number as prometheus_client writes it (Go's formatting: +Inf, 1e+06)."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _children(metric: Any) -> list[tuple[tuple[str, ...], Any]]:
    if not metric._labelnames:
        return [((), metric)]
    with metric._lock:
        return list(metric._metrics.items())


def text_slices(metrics: Sequence[Any], per_slice: int = SLICE) -> Iterator[str]:
    """The exposition text of ``metrics`` (Counter, Gauge, Histogram), in pieces of about
    ``per_slice`` children each; joined, they are the whole text."""
    out: list[str] = []
    done = 0
    for metric in metrics:
        kind = metric._type
        name = metric._name + "_total" if kind == "counter" else metric._name
        out.append(f"# HELP {name} {_escape_help(metric._documentation)}\n# TYPE {name} {kind}\n")
        names = metric._labelnames
        for values, child in _children(metric):
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in zip(names, values, strict=True))
            if kind == "histogram":
                _histogram(out, name, labels, child)
            else:
                braces = f"{{{labels}}}" if labels else ""
                out.append(f"{name}{braces} {_num(child._value.get())}\n")
            done += 1
            if done % per_slice == 0:
                yield "".join(out)
                out.clear()
    yield "".join(out)


def _histogram(out: list[str], name: str, labels: str, child: Any) -> None:
    sep = "," if labels else ""
    braces = f"{{{labels}}}" if labels else ""
    total = 0.0
    for bound, bucket in zip(child._upper_bounds, child._buckets, strict=True):
        total += bucket.get()
        out.append(f'{name}_bucket{{{labels}{sep}le="{_num(bound)}"}} {_num(total)}\n')
    out.append(f"{name}_count{braces} {_num(total)}\n")
    out.append(f"{name}_sum{braces} {_num(child._sum.get())}\n")
