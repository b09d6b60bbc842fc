"""Real brokers for integration tests.

Fixtures:

- ``tansu_broker`` (session): a started :class:`pipeline.runtime.brokers.EmbeddedTansu`.
- ``kafka_broker`` (session): a started :class:`tests.support.kafka.ApacheKafka` (JVM, jars
  from the Maven cache; first use runs ``mvn``).
- ``broker``: parametrized over ``tansu`` and ``kafka`` (test ids ``[tansu]``/``[kafka]``,
  the latter also marked ``kafka``); gives the bootstrap string ``"127.0.0.1:PORT"``.
- ``deploy``: ``deploy(**kw)`` makes a ``harness.Deployment`` on ``broker`` (closed at the end).

When the session has collected ``test_experiments.py``, its namespace campaign starts at once in a
process of its own (``tests.support.experiments.CampaignProcess``) and those tests run last: the
campaign's minutes of real traffic pass beside the rest of the suite.

A broker that cannot start makes the test that needs it fail (never skip). Every test in
this folder is marked ``integration``. ``unique_name(prefix)`` comes from ``helpers``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.experiments import EXPERIMENTS, CampaignProcess
from tests.support.helpers import unique_name
from tests.support.kafka import ApacheKafka

from pipeline.runtime.brokers import BrokerError, BrokerLauncher, EmbeddedTansu

__all__ = ["unique_name"]

_HERE = Path(__file__).resolve().parent


_EXPERIMENTS = _HERE / "test_experiments.py"


def _experiment(item: pytest.Item) -> bool:
    return Path(str(item.path)).resolve() == _EXPERIMENTS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)
    # the namespace campaign's tests last: by then its process (started below) has finished
    items.sort(key=_experiment)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the namespace campaign now if its tests are to run (after ``-k`` and the like)."""
    config = session.config
    if config.option.collectonly or not any(map(_experiment, session.items)):
        return
    work = config._tmp_path_factory.mktemp("experiments")  # type: ignore[attr-defined]
    config.stash[EXPERIMENTS] = CampaignProcess(work)


def pytest_unconfigure(config: pytest.Config) -> None:
    proc = config.stash.get(EXPERIMENTS, None)
    if proc is not None:
        proc.stop()  # already done unless the session ended before the campaign did


def _started(launcher: BrokerLauncher) -> Iterator[BrokerLauncher]:
    error = None
    try:
        launcher.start()
    except (BrokerError, OSError) as e:
        error = f"could not start the {launcher.kind} broker: {e}"
    if error:
        pytest.fail(error, pytrace=False)
    try:
        yield launcher
    finally:
        launcher.stop()


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerLauncher]:
    """A Tansu broker (memory storage) for the whole session."""
    yield from _started(EmbeddedTansu(tmp_path_factory.mktemp("tansu")))


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerLauncher]:
    """An Apache Kafka KRaft node for the whole session."""
    yield from _started(ApacheKafka(tmp_path_factory.mktemp("kafka")))


@pytest.fixture(
    params=[
        pytest.param("tansu", id="tansu"),
        pytest.param("kafka", id="kafka", marks=pytest.mark.kafka),
    ]
)
def broker(request: pytest.FixtureRequest) -> str:
    """Bootstrap servers of each broker kind in turn."""
    launcher: BrokerLauncher = request.getfixturevalue(f"{request.param}_broker")
    return str(launcher.bootstrap)


@pytest.fixture
def deploy(broker, tmp_path):
    """``deploy(**kw)`` -> a :class:`harness.Deployment` on ``broker``; all are closed after the test."""
    from tests.support.harness import Deployment

    made: list[Deployment] = []

    def make(**kw) -> Deployment:
        d = Deployment(broker, tmp_path / f"d{len(made)}", **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
