"""Hypothesis strategies: valid reports, near-valid mutations of them, and arbitrary bytes.

Shared by the validator's unit tests and the running-worker tests, so both throw the
same kinds of input at the code.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from hypothesis import strategies as st

SUBNETS = [("s-1a", "az-1a", "vpc-a"), ("s-1c", "az-1c", "vpc-a"), ("s-1d", "az-1d", "vpc-a")]
COUNTERS = ("bytes_sent", "bytes_received", "retransmissions", "timeouts", "flows")


def base_start(now: float | None = None) -> int:
    """An hour boundary two hours ago: far enough in the past for windows to close by idleness."""
    now = time.time() if now is None else now
    return int(now // 3600 * 3600 - 7200)


@st.composite
def samples(draw) -> dict[str, Any]:
    sub, az, vpc = draw(st.sampled_from(SUBNETS))
    remote: dict[str, Any] = {"ip": f"10.0.{SUBNETS.index((sub, az, vpc))}.{draw(st.integers(4, 200))}"}
    if draw(st.booleans()):
        remote.update(subnet=sub, az=az, vpc=vpc)
    return {
        "remote": remote,
        "bytes_sent": draw(st.integers(0, 10**10)),
        "bytes_received": draw(st.integers(0, 10**10)),
        "retransmissions": draw(st.integers(0, 10**4)),
        "timeouts": draw(st.integers(0, 100)),
        "flows": draw(st.integers(1, 50)),
        "rtt_us": draw(st.lists(st.integers(1, 60_000_000), max_size=5)),
    }


@st.composite
def reports(draw, start: int | None = None, max_samples: int = 8) -> dict[str, Any]:
    sub, az, vpc = draw(st.sampled_from(SUBNETS))
    n = draw(st.integers(0, 50))
    t0 = base_start() if start is None else start
    return {
        "version": 1,
        "instance": f"{sub}/{n}",
        "local": {"ip": f"10.0.{SUBNETS.index((sub, az, vpc))}.{n + 4}", "subnet": sub, "az": az, "vpc": vpc},
        "start": t0 + 30 * draw(st.integers(0, 39)),
        "interval_s": 30,
        "samples": draw(st.lists(samples(), min_size=1, max_size=max_samples)),
    }


#: Values of every JSON type, for type confusion.
json_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                  max_size=2),
)


@st.composite
def near_valid(draw) -> dict[str, Any]:
    """A valid report with one to three mutations: a field dropped, retyped or pushed out of range."""
    rep = copy.deepcopy(draw(reports()))
    for _ in range(draw(st.integers(1, 3))):
        try:
            _mutate_once(draw, rep)
        except (KeyError, TypeError, IndexError, AttributeError, ValueError):
            pass  # an earlier mutation already broke the structure this one wanted
    return rep


def _mutate_once(draw, rep: dict) -> None:
    where = draw(st.sampled_from(["header", "sample", "sample", "remote", "rtt"]))
    if where == "header":
        target = rep
        key = draw(st.sampled_from(["version", "instance", "local", "start", "interval_s", "samples"]))
    elif where == "remote":
        target = rep["samples"][draw(st.integers(0, len(rep["samples"]) - 1))]["remote"]
        key = draw(st.sampled_from(["ip", "subnet", "az", "vpc"]))
    elif where == "rtt":
        s = rep["samples"][draw(st.integers(0, len(rep["samples"]) - 1))]
        if not s["rtt_us"]:
            s["rtt_us"].append(1000)
        target, key = s["rtt_us"], draw(st.integers(0, len(s["rtt_us"]) - 1))
    else:
        target = rep["samples"][draw(st.integers(0, len(rep["samples"]) - 1))]
        key = draw(st.sampled_from([*COUNTERS, "rtt_us", "remote"]))
    action = draw(st.sampled_from(["drop", "retype", "range"]))
    if action == "drop" and isinstance(target, dict):
        target.pop(key, None)
    elif action == "range":
        target[key] = draw(st.sampled_from([-1, -(2**40), 2**63, 10**13, 0, 3601, 10**9, 1.0, 2.5]))
    else:
        target[key] = draw(json_values)


arbitrary_bytes = st.binary(max_size=300)
