"""The Faust app's durability settings: what a replicated production cluster relies on."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Settings
from pipeline.runtime.app import create_app


def test_faust_topics_get_the_configured_replication_factor(tmp_path: Path):
    """Topics Faust creates itself (its assignor topic) are replicated like flowmon's own."""
    flow = create_app(Settings(replication_factor=3, data_dir=tmp_path), "127.0.0.1:9092,127.0.0.1:9093")
    assert flow.app.conf.topic_replication_factor == 3
    assert flow.topics.replication == 3


def test_worker_writes_wait_for_all_in_sync_replicas(tmp_path: Path):
    """acks=all: with min.insync.replicas=2, a write acknowledged by the leader alone (acks=1) is lost
    when that leader dies before a follower copied it; windows, state and offsets must not be."""
    flow = create_app(Settings(data_dir=tmp_path), "127.0.0.1:9092")
    assert flow.app.conf.producer_acks == -1
