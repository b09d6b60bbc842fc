"""The reference's experiments on real TCP: hosts in network namespaces run ``flowmon agent`` against a
pipeline worker on the embedded broker, and what lands in ClickHouse is compared with what iperf3, curl
and ping measured on the wire.

The campaign (the lab, its seven phases and what each landed) is ``tests.support.experiments``; it runs
in a process of its own, started by ``conftest.py`` as soon as the session has collected this module,
beside the rest of the suite. These tests, run last, wait for its results and assert on them.
"""

from __future__ import annotations

import pytest
from tests.support.experiments import A1, EXPERIMENTS, MB10, C, Campaign, CampaignProcess, LabError

pytestmark = pytest.mark.timeout(1200)  # the campaign, if it is still running when these tests come


@pytest.fixture(scope="module")
def campaign(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Campaign:
    proc = request.config.stash.get(EXPERIMENTS, None) or CampaignProcess(tmp_path_factory.mktemp("experiments"))
    try:
        camp = proc.result()
    except LabError as e:
        pytest.fail(f"cannot build the network namespaces: {e}", pytrace=False)
    print("\n" + (proc.work / "experiments.md").read_text())
    return camp


# --- the assertions, one test per experiment -----------------------------------------------------------


def _within(got: float, ref: float, rel: float) -> bool:
    return abs(got - ref) <= rel * ref


def test_http_bytes_per_pair_match_curl_and_1a_shows_both_ends(campaign):
    w = campaign.windows("http")
    curl = campaign.phases["http"].figures["curl"]
    assert all(v == 3 * MB10 for v in curl.values()), curl
    for sub in ("subnet-1a", "subnet-1c", "subnet-1d"):
        ref = sum(v for h, v in curl.items() if h.startswith(sub))
        assert _within(w[(sub, "subnet-1a")]["received"], ref, 0.02), (sub, w[(sub, "subnet-1a")], ref)
        if sub != "subnet-1a":  # the server's side of the same transfers
            assert _within(w[("subnet-1a", sub)]["sent"], ref, 0.02), (sub, w[("subnet-1a", sub)], ref)
    both = w[("subnet-1a", "subnet-1a")]  # the server's and the 1a client's reports in one window
    assert _within(both["sent"], curl[A1], 0.02) and _within(both["received"], curl[A1], 0.02), both


def test_burst_bytes_and_retransmissions_match_iperf3(campaign):
    ref_bytes, ref_retrans = campaign.phases["burst"].figures["iperf3"]
    got = campaign.windows("burst")[("subnet-1c", "subnet-1a")]
    assert _within(got["sent"], ref_bytes, 0.02), (got, ref_bytes)
    assert abs(got["retrans"] - ref_retrans) <= max(0.1 * ref_retrans, 2), (got, ref_retrans)


def test_loss_on_one_client_is_workload_and_nhi_stays_healthy(campaign):
    fig = campaign.phases["host_loss"].figures
    (_, iperf3), kernel = fig["iperf3"], fig["kernel_retrans"]
    assert iperf3 > 20, "5 % loss must make iperf3 retransmit"
    # The reference is the kernel's own count in the client's namespace: iperf3's figure is read when it
    # stops writing, and the socket retransmits after that while it drains. (The test compared the 1c->1a
    # pair, which also holds the other 1c clients' flows, with iperf3's figure: 337 against 299 in one CI run.)
    got = campaign.instances("host_loss")[(C[0], "subnet-1a")]
    assert iperf3 <= got["retrans"] <= kernel, (got, fig)
    assert kernel - got["retrans"] <= max(2, 0.02 * kernel), (got, fig)  # the agent's own (unlossy) links
    assert campaign.windows("host_loss")[("subnet-1c", "subnet-1a")]["retrans"] >= got["retrans"]
    verdicts = campaign.attributions("host_loss")
    mine = [v for v in verdicts if v["instance"] == C[0]]
    assert mine, f"no anomaly attributed for {C[0]}'s flows: {verdicts}; warm-up {campaign.phases['warmup'].figures}"
    assert all(v["cause"] == "workload" and v["element"] == C[0] for v in mine), mine
    assert not [v for v in verdicts if v["cause"] == "infrastructure"], verdicts
    assert not [n for n in campaign.nhi("host_loss") if "az-1c" in n[1] and "az-1a" in n[1]], campaign.nhi("host_loss")


def test_loss_on_the_path_is_infrastructure_and_nhi_degrades(campaign):
    verdicts = campaign.attributions("path_loss")
    flagged = {v["instance"] for v in verdicts if v["scope"] == "instance"}
    assert len(flagged & set(C)) >= 2, (verdicts, campaign.phases["warmup"].figures)  # the 1c clients' flows towards 1a
    mine = [v for v in verdicts if v["instance"] in C]
    assert mine and all(v["cause"] == "infrastructure" and v["element"] == "az-1a|az-1c" for v in mine), verdicts
    # the pair's own retransmission alert too; its timeout or RTT alerts (loss also delays) may stay
    # undetermined, never workload
    pair = [v for v in verdicts if v["scope"] == "pair"]
    assert any(v["family"] == "retrans" and v["cause"] == "infrastructure" for v in pair), verdicts
    assert not [v for v in verdicts if v["cause"] == "workload"], verdicts
    degraded = campaign.nhi("path_loss")
    assert any(kind == "az_pair" and "az-1a" in scope and "az-1c" in scope for kind, scope, _ in degraded), degraded


def test_delay_raises_inter_az_rtt_by_what_ping_measures(campaign):
    fig = campaign.phases["delay"].figures
    w = campaign.windows("delay")
    inter, intra = w[("subnet-1c", "subnet-1a")]["rtt_ms"], w[("subnet-1a", "subnet-1a")]["rtt_ms"]
    ping_extra = fig["ping_inter_ms"] - fig["ping_intra_ms"]
    assert ping_extra > 30, fig  # the queue really filled
    assert 0.5 * ping_extra <= inter - intra <= 2.0 * ping_extra, (inter, intra, fig)


def test_broker_outage_loses_and_double_counts_nothing(campaign):
    g = campaign.phases["outage"].figures
    assert all(n > 0 for n in g["spooled_intervals"].values()), g  # every agent held reports back
    w = campaign.windows("outage")
    for sub in ("subnet-1a", "subnet-1c", "subnet-1d"):
        ref = sum(v for h, v in g["curl"].items() if h.startswith(sub))
        assert _within(w[(sub, "subnet-1a")]["received"], ref, 0.02), (sub, w[(sub, "subnet-1a")], ref)
        if sub != "subnet-1a":
            assert _within(w[("subnet-1a", sub)]["sent"], ref, 0.02), (sub, w[("subnet-1a", sub)], ref)
    dead = campaign.deadletters
    assert not [x for x in dead if x.get("reason") == "late"], dead
