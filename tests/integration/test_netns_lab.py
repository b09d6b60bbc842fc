"""The network lab (``tests/support/netns.py``) really does what later experiments rely on.

One lab for the module. Real outcomes only: pings across AZs, a Tansu broker on the
management bridge reached from inside a host namespace, retransmissions counted by TCP
(iperf3 ``-J``) where loss is configured and not elsewhere, queueing delay on inter-AZ
paths only, bytes fetched over HTTP, and nothing left behind after ``close()``.
Needs root and the tools of ``REQUIRED_COMMANDS``; without them the tests fail with that line.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.support.netns import INSTANCES, REQUIRED_COMMANDS, STATE_DIR, SUBNETS, Lab, LabError

from pipeline.ingest.topology import load_topology
from pipeline.runtime.brokers import EmbeddedTansu

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    error = None
    try:
        the_lab = Lab().start()
    except LabError as e:
        error = str(e)
    if error:
        pytest.fail(error, pytrace=False)
    try:
        yield the_lab
    finally:
        the_lab.close()
    assert the_lab.leftovers() == []


@pytest.fixture
def clean(lab: Lab) -> Iterator[Lab]:
    """The lab with no loss and no delay before and after the test."""
    lab.clear_loss()
    lab.clear_delay()
    yield lab
    lab.clear_loss()
    lab.clear_delay()


def _sent(result: dict) -> tuple[int, int]:
    """(bytes, retransmissions) the iperf3 sender reported."""
    s = result["end"]["sum_sent"]
    return int(s["bytes"]), int(s["retransmits"])


def test_every_host_pings_every_other_and_only_inter_subnet_traffic_is_routed(lab: Lab) -> None:
    assert lab.hosts == tuple(INSTANCES)
    ttls = {}
    for src in lab.hosts:
        for dst in lab.hosts:
            if src != dst:
                out = lab.run(src, ["ping", "-n", "-c", "1", "-W", "2", lab.ip(dst)]).stdout
                ttls[src, dst] = int(re.search(r"ttl=(\d+)", out).group(1))
    same_subnet = {k for k in ttls if lab.subnet_of(k[0]) == lab.subnet_of(k[1])}
    assert {ttls[k] for k in same_subnet} == {64}  # bridged: no hop
    assert {ttls[k] for k in set(ttls) - same_subnet} == {63}  # through the router
    assert len(ttls) == 30


def test_addresses_follow_the_topology_convention_and_the_topology_file_loads(lab: Lab, tmp_path: Path) -> None:
    topo = load_topology(lab.topology_yaml(tmp_path / "lab.yaml"))
    assert sorted(topo.instances) == sorted(lab.hosts)
    for h in lab.hosts:
        p = topo.instances[h]
        assert p.ip == lab.ip(h)
        assert topo.locate(lab.ip(h)) == p.location
        assert p.subnet == lab.subnet_of(h).id and p.az == lab.subnet_of(h).az and p.vpc == "vpc-a"
        # the address the host really has on its data link
        assert f"inet {lab.ip(h)}/24" in lab.run(h, ["ip", "-4", "addr", "show", "dev", "eth0"]).stdout
    assert lab.ip("subnet-1a/0") == "10.71.0.4" and lab.ip("subnet-1c/2") == "10.71.1.6"
    # the management network is outside every subnet, so an agent can tell it apart
    assert topo.locate(lab.mgmt_ip).subnet == "external"
    assert [s.az for s in SUBNETS] == ["az-1a", "az-1c", "az-1d"]


def test_a_tansu_broker_on_the_management_ip_is_reached_from_a_host_namespace(lab: Lab, tmp_path: Path) -> None:
    # a Kafka Metadata request from inside the host (kcat can't talk to Tansu: test_pipeline.py)
    probe = "import sys; from pipeline.runtime.brokers import probe_metadata as p; print(p(sys.argv[1], int(sys.argv[2])))"
    with EmbeddedTansu(tmp_path, host=lab.mgmt_ip) as tansu:
        host, _, port = tansu.bootstrap.rpartition(":")
        assert host == lab.mgmt_ip
        out = lab.run("subnet-1c/0", [sys.executable, "-c", probe, host, port], env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert f"cluster_id='{tansu.cluster_id}'" in out, out  # our broker answered
    assert re.search(rf"brokers=\[\(\d+, '{re.escape(lab.mgmt_ip)}', {port}\)\]", out), out  # advertising the bridge
    # the management route does not carry data-network traffic
    route = lab.run("subnet-1c/0", ["ip", "-4", "route", "get", lab.ip("subnet-1a/0")]).stdout
    assert "dev eth0" in route and "mgmt0" not in route


def test_path_loss_makes_retransmissions_between_1c_and_1a_only(clean: Lab) -> None:
    lab = clean
    lab.path_loss("subnet-1c", "subnet-1a", 5)
    flows = {
        "1c->1a": ("subnet-1c/0", "subnet-1a/0"),
        "1a->1c": ("subnet-1a/1", "subnet-1c/1"),
        "1d->1a": ("subnet-1d/0", "subnet-1a/0"),
        "1c->1d": ("subnet-1c/2", "subnet-1d/0"),
        "1c->1c": ("subnet-1c/2", "subnet-1c/0"),
    }
    results = dict(zip(flows, lab.iperf3_many(flows.values(), seconds=4, bitrate="200M")))
    sent = {k: _sent(r) for k, r in results.items()}
    # namespaces inherit the root's congestion control (bbr here); iperf3 -C sets cubic per connection
    assert {r["end"]["sender_tcp_congestion"] for r in results.values()} == {"cubic"}
    drops = lab.loss_counters()
    print("path loss 5 % (bytes, retransmits):", sent, "drops:", drops)
    for k in ("1c->1a", "1a->1c"):
        nbytes, retrans = sent[k]
        assert retrans > 0, (k, sent)
        # ~5 % of the segments are resent (plus RTO retries): neither none nor most
        assert 0.02 < retrans / (nbytes / 1448) < 0.25, (k, sent)
    for k in ("1d->1a", "1c->1d", "1c->1c"):
        assert sent[k][1] <= 5, (k, sent)  # clean: 0 measured, rarely 1 (reordering)
        assert sent[k][0] > 50_000_000, (k, sent)  # 200 Mbit/s for 4 s = 100 MB
    assert drops["path subnet-1c -> subnet-1a"] > 0 and drops["path subnet-1a -> subnet-1c"] > 0


def test_host_loss_hits_one_host_and_not_its_neighbour(clean: Lab) -> None:
    lab = clean
    lab.host_loss("subnet-1c/0", 5)
    lossy, neighbour = lab.iperf3_many([("subnet-1c/0", "subnet-1a/0"), ("subnet-1c/1", "subnet-1a/0")], seconds=4)
    print("host loss 5 % on subnet-1c/0 (bytes, retransmits):", _sent(lossy), "neighbour subnet-1c/1:", _sent(neighbour))
    assert _sent(lossy)[1] > 0
    assert _sent(neighbour)[1] <= 5 and _sent(neighbour)[0] > 50_000_000
    # the host's own TCP counted them: its socket's retransmissions, seen by iperf3 from tcp_info
    drops = lab.loss_counters()
    assert drops["host subnet-1c/0 out"] > 0 and drops["host subnet-1c/0 in"] > 0
    lab.clear_loss()
    assert lab.loss_counters() == {}


def test_inter_az_delay_under_load_leaves_intra_az_alone(clean: Lab) -> None:
    lab = clean
    idle = lab.ping("subnet-1c/1", "subnet-1a/1", count=5, interval=0.05)
    lab.inter_az_delay(rate="20mbit", queue_ms=200)
    with ThreadPoolExecutor(1) as ex:
        load = ex.submit(lab.iperf3, "subnet-1c/0", "subnet-1a/0", 5, "100M")
        time.sleep(1.5)  # let the queue fill
        loaded = lab.ping("subnet-1c/1", "subnet-1a/1", count=8, interval=0.2)
        intra = lab.ping("subnet-1a/1", "subnet-1a/0", count=8, interval=0.2)
        nbytes, _ = _sent(load.result())
    print(f"ping 1c->1a idle {idle:.3f} ms, loaded {loaded:.1f} ms; 1a->1a loaded {intra:.3f} ms; "
          f"shaped iperf3 sent {nbytes} B")  # fmt: skip
    assert idle < 1.0
    assert loaded > idle + 30
    assert intra < 1.0
    assert nbytes < 5 * 25e6 / 8 * 1.5  # shaped to 20 Mbit/s, not 100
    lab.clear_delay()
    assert lab.ping("subnet-1c/1", "subnet-1a/1", count=3, interval=0.05) < 1.0


def test_fetch_returns_every_byte(clean: Lab) -> None:
    lab = clean
    url = lab.http_server("subnet-1a/0", 10_000_000)
    assert url.startswith(f"http://{lab.ip('subnet-1a/0')}:")
    assert lab.fetch("subnet-1c/2", "subnet-1a/0", times=3) == 30_000_000


def test_close_removes_everything_even_after_a_failure() -> None:
    lab = Lab()
    with pytest.raises(RuntimeError, match="boom"), lab:
        assert len(lab.leftovers()) == len(INSTANCES) + 1 + len(INSTANCES) + 1  # netns + root links
        lab.popen("subnet-1a/0", ["sleep", "600"])
        raise RuntimeError("boom")
    assert lab.leftovers() == []
    assert not any(n.startswith(lab.prefix) for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    assert not (STATE_DIR / f"{lab.tag}.owner").exists()
    print(f"lab build {lab.build_s:.2f} s, teardown {lab.teardown_s:.2f} s")


def test_a_lab_whose_process_was_killed_is_removed_by_the_next_one(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import sys, time
        from tests.support.netns import Lab
        lab = Lab().start()
        print(lab.tag, flush=True)
        time.sleep(600)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        tag = p.stdout.readline().strip()
    finally:
        p.send_signal(signal.SIGKILL)  # no atexit: its namespaces stay
        p.wait()
        p.stdout.close()
    assert tag, "the child lab did not start"
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"fmlab-{tag}-r" in left
    with Lab():
        pass
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"fmlab-{tag}-" not in left
    assert not (Path(tempfile.gettempdir()) / f"fmlab-{tag}").exists()
    assert not (STATE_DIR / f"{tag}.owner").exists()


def test_a_missing_tool_and_no_root_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as an ordinary user would run it
    with pytest.raises(LabError) as e:
        Lab().start()
    msg = str(e.value)
    assert msg.startswith("the network lab needs root (")
    assert "commands ip, tc, ss, nft, ethtool, iperf3, ping, curl" in msg
    assert "apt-get install curl ethtool iperf3 iproute2 iputils-ping nftables" in msg


def test_management_networks_are_unique_per_lab(lab: Lab) -> None:
    with Lab() as other:
        assert other.mgmt_ip != lab.mgmt_ip and other.prefix != lab.prefix
        assert not ipaddress.ip_network(f"{other.mgmt_ip}/24", strict=False).overlaps(
            ipaddress.ip_network(f"{lab.mgmt_ip}/24", strict=False)
        )
        assert other.ping("subnet-1c/0", "subnet-1a/0", count=1) < 5  # both work side by side
        assert lab.ping("subnet-1c/0", "subnet-1a/0", count=1) < 5


def test_ci_installs_every_tool_the_lab_needs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    for pkg in set(REQUIRED_COMMANDS.values()):
        assert re.search(rf"^command -v \S+ >/dev/null \|\| need\+=\({re.escape(pkg)}\)$", ci, re.M), pkg
