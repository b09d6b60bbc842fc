"""The production deployment files, checked without Docker or network.

docker-compose.yml, Dockerfile, deploy/ (Prometheus, Grafana provisioning and dashboards,
example topology) cannot be run here, so this module parses them and checks what
``docker compose config`` would, plus what only this project knows:

* compose: every service has a pinned image or a build; ``${VAR:-default}``
  interpolation resolves; ``depends_on`` targets exist (and have a healthcheck when
  ``service_healthy`` is asked); published host ports don't collide; named volumes are
  declared and bind-mount sources exist;
* flowmon settings: every ``FLOWMON_*`` variable is a field of
  :class:`pipeline.config.Settings` and the values validate (both as keyword arguments
  and read from the environment as the container would); the worker's broker is one of
  Kafka's advertised listeners, its ClickHouse DSN matches the server's user, password
  and database; the worker command parses with the real CLI;
* Kafka: KRaft single node (broker+controller), consistent listeners/protocol map/quorum
  voters, replication factor 1 for internal topics, a valid cluster id;
* Grafana: the ClickHouse plugin is installed and provisioned, dashboards parse, use
  provisioned datasources, and every panel's SQL names only tables/views of
  schemas/clickhouse/*.sql and their columns (static check), reads the
  ReplacingMergeTree tables with FINAL, and actually runs on chdb against the migrated
  schema with sample rows (macros and variables expanded as the plugin does);
* Prometheus scrapes the workers' metrics port; the pipeline dashboard's PromQL names
  metrics that pipeline/runtime/metrics.py exports;
* Dockerfile: python:3.11-slim, editable install keeping schemas/ next to pipeline/,
  entrypoint = the console script of pyproject.toml, default command = a CLI command;
* the host agent: deploy/systemd/flowmon-agent.service (parsed; ExecStart parses with the
  real CLI; its StateDirectory is the agent's state dir; hardening that keeps netlink and
  the host's network), deploy/agent.example.yaml loads into ``AgentConfig`` and places its
  instance in the example topology, deploy/agent.env.example names only Settings fields,
  and deploy/agent/docker-compose.agent.yml runs in the host's network namespace with its
  state dir on a named volume.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import tomllib
import uuid
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from pipeline.config import SCHEMAS_DIR, Settings

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DEPLOY = REPO / "deploy"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"
DASHBOARDS_DIR = DEPLOY / "grafana" / "dashboards"
PROMETHEUS_FILE = DEPLOY / "prometheus.yml"
TOPOLOGY_EXAMPLE = DEPLOY / "topology.example.yaml"
CLICKHOUSE_PLUGIN = "grafana-clickhouse-datasource"


# =====================================================================================
# compose loading: YAML (with merge keys) + ${VAR} interpolation, as docker compose does
# =====================================================================================
_INTERP_RE = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.S)


def interpolate(text: str, env: dict[str, str], where: str = "") -> str:
    """Compose variable substitution: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR:+a}.

    Unset variables without a default are an error here, as required ones (``${VAR:?}``) are:
    secrets have no defaults (:data:`SECRETS` lists them; deploy/README.md documents them).

    >>> interpolate("a${X:-b}c$$", {})
    'abc$'
    >>> interpolate("${X:+set}", {"X": "1"})
    'set'
    """

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        expr = m.group("braced") if m.group("braced") is not None else m.group("named")
        bm = _BRACED_RE.match(expr)
        if not bm:
            raise ValueError(f"{where}: bad interpolation {m.group(0)!r}")
        name, op, arg = bm.group("name"), bm.group("op"), bm.group("arg")
        value = env.get(name)
        if op is None:
            if value is None:
                raise ValueError(f"{where}: ${{{name}}} has no default and is not set")
            return value
        arg = interpolate(arg, env, where)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?"):
            if (op == ":?" and not value) or value is None:
                raise ValueError(f"{where}: required variable {name} is not set ({arg})")
            return value
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return arg if value is not None else ""
        raise ValueError(f"{where}: unsupported operator {op!r}")

    return _INTERP_RE.sub(sub, text)


def _interpolate_tree(node: Any, env: dict[str, str], where: str = "") -> Any:
    if isinstance(node, str):
        return interpolate(node, env, where)
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(v, env, f"{where}[{i}]") for i, v in enumerate(node)]
    return node


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())  # SafeLoader resolves `<<:` merge keys
    assert isinstance(raw, dict) and isinstance(raw.get("services"), dict), "compose file needs services:"
    top = {k: v for k, v in raw.items() if not str(k).startswith("x-")}  # x-* are extension fields
    return _interpolate_tree(top, env or {}, "compose")


#: The secrets a deployment must set (``${VAR:?}``: no default stands in for them), with test values
#: that need URL-encoding (a password put raw into a DSN would break it).
SECRETS = {"CLICKHOUSE_PASSWORD": "w r:/@%?#1", "GRAFANA_CLICKHOUSE_PASSWORD": "gr@f:ana/2",
           "GRAFANA_ADMIN_PASSWORD": "adm1n&pw"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(SECRETS)


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            k, _, v = item.partition("=")
            out[k] = v
        return out
    return {k: "" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for k, v in env.items()}


def parse_port(spec: Any) -> tuple[str, int | None, int, str]:
    """(host_ip, host_port or None, container_port, protocol) of a ports: entry."""
    if isinstance(spec, dict):
        return (spec.get("host_ip", "0.0.0.0"), int(spec["published"]) if spec.get("published") else None,
                int(spec["target"]), spec.get("protocol", "tcp"))
    s, _, proto = str(spec).partition("/")
    parts = s.rsplit(":", 2) if s.count(":") >= 2 else s.split(":")
    if len(parts) == 1:
        return "0.0.0.0", None, int(parts[0]), proto or "tcp"
    if len(parts) == 2:
        return "0.0.0.0", int(parts[0]), int(parts[1]), proto or "tcp"
    return parts[0], int(parts[1]), int(parts[2]), proto or "tcp"


def parse_volume(spec: Any) -> tuple[str, str, str]:
    """(kind 'bind'|'volume'|'tmpfs', source, target) of a volumes: entry."""
    if isinstance(spec, dict):
        return spec.get("type", "volume"), str(spec.get("source", "")), str(spec["target"])
    parts = str(spec).split(":")
    if len(parts) == 1:
        return "volume", "", parts[0]  # anonymous volume
    source, target = parts[0], parts[1]
    kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    return kind, source, target


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [parse_volume(v) for v in service.get("volumes") or []]


def bind_target_of(service: dict[str, Any], source: Path) -> str | None:
    for kind, src, target in mounts(service):
        if kind == "bind" and (REPO / src).resolve() == source.resolve():
            return target
    return None


def container_path_to_repo(service: dict[str, Any], path: str) -> Path | None:
    """The repo file a container path of *service* comes from through a bind mount."""
    best = None
    for kind, src, target in mounts(service):
        if kind != "bind":
            continue
        t = PurePosixPath(target)
        p = PurePosixPath(path)
        if p == t or t in p.parents:
            if best is None or len(str(t)) > len(str(best[1])):
                best = (REPO / src, t)
    if best is None:
        return None
    return best[0] / PurePosixPath(path).relative_to(best[1])


def image_and_tag(image: str) -> tuple[str, str | None]:
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, _, tag = name.rpartition(":")
        return repo, tag
    return name, None if not digest else "@" + digest


def flowmon_services(services) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if any(k.startswith("FLOWMON_") for k in env_of(s))}


def worker_services(services) -> dict[str, dict[str, Any]]:
    """Services that run `flowmon worker`."""
    out = {}
    for name, s in flowmon_services(services).items():
        cmd = s.get("command") or dockerfile_cmd()
        cmd = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        if cmd and cmd[0] == "worker":
            out[name] = s
    return out


def replicas(service: dict[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", 1))


# =====================================================================================
# compose structure
# =====================================================================================
def test_compose_has_the_production_services(services):
    assert {"kafka", "clickhouse", "grafana", "prometheus"} <= set(services)
    workers = worker_services(services)
    assert workers, "no service runs `flowmon worker`"
    assert sum(replicas(s) for s in workers.values()) >= 3, "several pipeline workers expected"


def test_compose_secrets_are_required():
    """No default stands in for a secret: each of SECRETS missing (or empty) stops interpolation with its name."""
    load_compose(SECRETS)
    for name in SECRETS:
        for env in ({k: v for k, v in SECRETS.items() if k != name}, SECRETS | {name: ""}):
            with pytest.raises(ValueError, match=f"required variable {name} is not set"):
                load_compose(env)
    raw = COMPOSE_FILE.read_text()
    assert not re.search(r"\$\{\w*(PASSWORD|SECRET|TOKEN)\w*:?-", raw), "a secret has a default"
    # and the values really are used: the writer's password, Grafana's own user
    c = load_compose(SECRETS | {"CLICKHOUSE_PASSWORD": "s3cret"})
    assert env_of(c["services"]["clickhouse"])["CLICKHOUSE_PASSWORD"] == "s3cret"
    for name, s in flowmon_services(c["services"]).items():
        want = SECRETS["GRAFANA_CLICKHOUSE_PASSWORD"] if _args(s)[:1] == ["console"] else "s3cret"
        assert unquote(urlsplit(settings_of(s).clickhouse_url()).password or "") == want, name


def test_env_files_are_ignored_by_git_and_docker():
    """Secrets go in .env: never committed, never sent to the image build context."""
    gitignore = (REPO / ".gitignore").read_text().split()
    dockerignore = (REPO / ".dockerignore").read_text().split()
    assert ".env" in gitignore, ".gitignore must list .env"
    assert ".env" in dockerignore and "**/.env" in dockerignore, ".dockerignore must list .env and **/.env"


def test_every_service_has_a_pinned_image_or_a_build(services):
    for name, s in services.items():
        assert "image" in s or "build" in s, f"{name}: neither image nor build"
        if "build" in s:
            build = s["build"] if isinstance(s["build"], dict) else {"context": s["build"]}
            context = REPO / build.get("context", ".")
            assert context.is_dir(), f"{name}: build context {context} missing"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: Dockerfile missing"
        if "image" in s:
            repo, tag = image_and_tag(s["image"])
            assert tag, f"{name}: image {s['image']!r} has no tag (implicitly :latest)"
            assert "latest" not in tag.lower(), f"{name}: image {s['image']!r} is not pinned"
            if "build" not in s:
                assert re.search(r"\d", tag), f"{name}: tag {tag!r} should name a version"


def test_depends_on_targets_exist_and_are_healthchecked(services):
    for name, s in services.items():
        deps = s.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep!r}"
            assert dep != name
            cond = (spec or {}).get("condition", "service_started")
            assert cond in ("service_started", "service_healthy", "service_completed_successfully"), cond
            if cond == "service_healthy":
                assert services[dep].get("healthcheck", {}).get("test"), f"{name} waits for {dep} healthy: no healthcheck"
    for name in worker_services(services):
        deps = services[name]["depends_on"]
        for dep in ("kafka", "clickhouse"):
            assert deps[dep]["condition"] == "service_healthy", f"{name} must wait for {dep} to be healthy"


def test_healthchecks(services):
    for name in ("kafka", "clickhouse"):
        hc = services[name].get("healthcheck")
        assert hc and hc.get("test"), f"{name} needs a healthcheck"
        assert not hc.get("disable")
    ch_test = " ".join(services["clickhouse"]["healthcheck"]["test"])
    assert "/ping" in ch_test and ":8123" in ch_test, "ClickHouse healthcheck should GET /ping on the HTTP port"
    kafka_test = " ".join(services["kafka"]["healthcheck"]["test"])
    listener_ports = {port for _, _, port in kafka_listeners(services["kafka"])["listeners"]}
    m = re.search(r"--bootstrap-server\s+(?:localhost|127\.0\.0\.1):(\d+)", kafka_test)
    assert m and int(m.group(1)) in listener_ports, "Kafka healthcheck should ask the broker on one of its listeners"
    for name, s in worker_services(services).items():
        hc = s.get("healthcheck")
        if hc:
            port = settings_of(s).metrics_port
            assert f":{port}/healthz" in " ".join(hc["test"]), f"{name}: healthcheck not /healthz on the metrics port"


def test_published_ports_do_not_collide(services):
    seen: dict[tuple[int, str], tuple[str, str]] = {}
    for name, s in services.items():
        ports = [parse_port(p) for p in s.get("ports") or []]
        if replicas(s) > 1:
            assert all(hp is None for _, hp, _, _ in ports), f"{name}: {replicas(s)} replicas cannot share a fixed host port"
        for ip, host_port, _, proto in ports:
            if host_port is None:
                continue
            key = (host_port, proto)
            if key in seen:
                other, other_ip = seen[key]
                clash = ip == other_ip or "0.0.0.0" in (ip, other_ip)
                assert not clash, f"host port {host_port}/{proto} published by {other} and {name}"
            seen[key] = (name, ip)


def test_volumes_are_declared_and_bind_sources_exist(compose, services):
    declared = set((compose.get("volumes") or {}).keys())
    used = set()
    for name, s in services.items():
        for kind, source, target in mounts(s):
            assert target.startswith("/"), f"{name}: mount target {target!r} must be absolute"
            if kind == "volume" and source:
                assert source in declared, f"{name}: volume {source!r} not declared under top-level volumes:"
                used.add(source)
            elif kind == "bind":
                assert (REPO / source).exists(), f"{name}: bind source {source} does not exist"
        targets = [t for _, _, t in mounts(s)]
        assert len(targets) == len(set(targets)), f"{name}: two mounts on one target"
    assert declared <= used, f"declared but unused volumes: {declared - used}"
    # the stateful services keep their data in named volumes
    for name, path in (("kafka", kafka_properties(services["kafka"])["log.dirs"]),
                       ("clickhouse", "/var/lib/clickhouse"), ("grafana", "/var/lib/grafana")):
        assert any(k == "volume" and t == path for k, _, t in mounts(services[name])), f"{name}: {path} not on a volume"


# =====================================================================================
# flowmon settings in the containers
# =====================================================================================
SETTINGS_ENV = {f"FLOWMON_{f.upper()}": f for f in Settings.model_fields}


def settings_kwargs(env: dict[str, str]) -> dict[str, str]:
    return {SETTINGS_ENV[k]: v for k, v in env.items() if k in SETTINGS_ENV}


def settings_of(service: dict[str, Any]) -> Settings:
    """The service's Settings from its FLOWMON_* values alone (the test process's own
    FLOWMON_* environment would otherwise fill the fields the service leaves out)."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("FLOWMON_")}
    try:
        return Settings(**settings_kwargs(env_of(service)))
    finally:
        os.environ.update(saved)


def test_flowmon_env_names_are_settings_fields(services):
    assert flowmon_services(services), "no service sets FLOWMON_* variables"
    for name, s in flowmon_services(services).items():
        unknown = sorted(k for k in env_of(s) if k.startswith("FLOWMON_") and k not in SETTINGS_ENV)
        assert not unknown, f"{name}: {unknown} are not pipeline.config.Settings fields (known: {sorted(SETTINGS_ENV)})"


def test_flowmon_env_values_validate(services, monkeypatch):
    for name, s in flowmon_services(services).items():
        env = {k: v for k, v in env_of(s).items() if k.startswith("FLOWMON_")}
        from_kwargs = settings_of(s)  # raises pydantic.ValidationError on a bad value
        # exactly as the container reads it: from the environment
        for k in list(os.environ):
            if k.startswith("FLOWMON_"):
                monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert Settings().model_dump() == from_kwargs.model_dump(), name


def test_worker_settings_for_production(services):
    for name, s in worker_services(services).items():
        st = settings_of(s)
        assert st.broker != "embedded", f"{name}: workers must use the Kafka service, not the embedded broker"
        assert urlsplit(st.clickhouse_dsn).scheme in ("http", "https"), f"{name}: production uses a ClickHouse server"
        assert st.role_set == {"pipeline", "sink"}, f"{name}: roles {st.roles!r}"
        assert st.replication_factor == 1, f"{name}: single Kafka node -> replication factor 1"
        assert st.metrics_port > 0, f"{name}: FLOWMON_METRICS_PORT must be set for Prometheus"
        assert st.partitions >= sum(replicas(w) for w in worker_services(services).values()), \
            "fewer partitions than workers: some workers would idle"
        assert st.topology is not None, f"{name}: FLOWMON_TOPOLOGY not set"
        source = container_path_to_repo(s, str(st.topology))
        assert source is not None and source.is_file(), f"{name}: {st.topology} is not mounted from a repo file"
        from pipeline.ingest.topology import load_topology
        assert load_topology(source).instances, f"{name}: topology {source} is empty"
        grace = s.get("stop_grace_period", "10s")  # Docker's default; a worker ends its own stop by shutdown_grace_s
        assert grace.endswith("s") and float(grace[:-1]) > st.shutdown_grace_s + 5, \
            f"{name}: stop_grace_period {grace} leaves the worker no time for its own deadline ({st.shutdown_grace_s} s)"


def test_every_flowmon_container_reaches_kafka_and_clickhouse(services):
    kafka = services["kafka"]
    advertised = {(host, port) for _, host, port in kafka_listeners(kafka)["advertised"]}
    kafka_names = {"kafka", kafka.get("hostname", "kafka")}
    ch_env = env_of(services["clickhouse"])
    for name, s in flowmon_services(services).items():
        st = settings_of(s)
        for server in st.broker.split(","):
            host, _, port = server.strip().rpartition(":")
            assert host in kafka_names, f"{name}: broker {server} is not the kafka service"
            assert (host, int(port)) in advertised, f"{name}: {server} is not an advertised listener {advertised}"
        dsn = urlsplit(st.clickhouse_url())  # the password URL-encoded into it (SECRETS need encoding)
        assert dsn.hostname == "clickhouse" and dsn.port == 8123, f"{name}: DSN {st.clickhouse_dsn}"
        if _args(s)[:1] == ["console"]:  # the console only reads: the read-only user Grafana uses
            assert unquote(dsn.username or "") == "grafana", f"{name}: the console must read as `grafana`"
            assert unquote(dsn.password or "") == ch_env["GRAFANA_CLICKHOUSE_PASSWORD"], f"{name}: DSN password"
        else:
            assert unquote(dsn.username or "") == ch_env["CLICKHOUSE_USER"], f"{name}: DSN user"
            assert unquote(dsn.password or "") == ch_env["CLICKHOUSE_PASSWORD"], f"{name}: DSN password"
        assert dsn.path.strip("/") == ch_env["CLICKHOUSE_DB"], f"{name}: DSN database"


def _args(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or dockerfile_cmd()
    return shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]


def test_migrations_run_in_one_service(services):
    """One one-shot `flowmon migrate` service; workers wait for it to succeed and do not migrate themselves."""
    migrators = [n for n, s in flowmon_services(services).items() if _args(s)[:1] == ["migrate"]]
    assert len(migrators) == 1, f"expected one `flowmon migrate` service, got {migrators}"
    m = services[migrators[0]]
    assert replicas(m) == 1 and m.get("restart") in ("no", None), "migrate runs once"
    for name, s in worker_services(services).items():
        assert settings_of(s).migrate is False, f"{name}: FLOWMON_MIGRATE must be false (the migrate service does it)"
        dep = (s.get("depends_on") or {}).get(migrators[0]) or {}
        assert dep.get("condition") == "service_completed_successfully", f"{name} must wait for {migrators[0]}"


def _cli_command(args: list[str]):
    """Parse `flowmon <args>` with the real CLI (no command is run)."""
    import click
    import typer.main

    from pipeline.cli.app import cli

    group = typer.main.get_command(cli)
    assert args, "empty command"
    ctx = click.Context(group, info_name="flowmon")
    cmd = group.get_command(ctx, args[0])
    assert cmd is not None, f"`flowmon {args[0]}` is not a command (have {sorted(group.list_commands(ctx))})"
    cmd.make_context(args[0], list(args[1:]), parent=ctx)  # raises click.UsageError on a bad option/argument
    return args[0]


def test_service_commands_parse_with_the_cli(services):
    for name, s in flowmon_services(services).items():
        cmd = s.get("command") or dockerfile_cmd()
        args = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]
        if args in (["--help"], ["-h"]):
            continue
        _cli_command(args)


# =====================================================================================
# Kafka
# =====================================================================================
_NOT_PROPERTIES = {"KAFKA_HEAP_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS", "KAFKA_LOG4J_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS",
                   "KAFKA_GC_LOG_OPTS", "KAFKA_LOG4J_ROOT_LOGLEVEL", "KAFKA_LOG4J_LOGGERS",
                   "KAFKA_TOOLS_LOG4J_LOGLEVEL", "KAFKA_VERSION", "KAFKA_JMX_HOSTNAME", "KAFKA_JMX_PORT"}
# Broker properties this deployment may set; a KAFKA_* variable outside this list is most
# likely a typo (Kafka would only log "unknown configuration"). Extend it when needed.
KNOWN_KAFKA_PROPERTIES = {
    "node.id", "process.roles", "listeners", "advertised.listeners", "listener.security.protocol.map",
    "controller.listener.names", "inter.broker.listener.name", "controller.quorum.voters",
    "controller.quorum.bootstrap.servers", "log.dirs", "num.partitions", "default.replication.factor",
    "min.insync.replicas", "offsets.topic.replication.factor", "offsets.topic.num.partitions",
    "transaction.state.log.replication.factor", "transaction.state.log.min.isr",
    "transaction.state.log.num.partitions", "share.coordinator.state.topic.replication.factor",
    "share.coordinator.state.topic.min.isr", "group.initial.rebalance.delay.ms", "group.min.session.timeout.ms",
    "group.max.session.timeout.ms", "auto.create.topics.enable", "delete.topic.enable", "log.retention.hours",
    "log.retention.bytes", "log.segment.bytes", "message.max.bytes", "replica.fetch.max.bytes",
    "num.network.threads", "num.io.threads", "unclean.leader.election.enable", "compression.type",
}


def kafka_properties(kafka: dict[str, Any]) -> dict[str, str]:
    """server.properties the apache/kafka image derives from KAFKA_* variables.

    Rules of the image (docker/examples/README.md): strip KAFKA_, '___' -> '-',
    '__' -> '_', '_' -> '.', lower case.
    """
    props = {}
    for k, v in env_of(kafka).items():
        if not k.startswith("KAFKA_") or k in _NOT_PROPERTIES:
            continue
        name = k[len("KAFKA_"):].replace("___", "\0").replace("__", "\1").replace("_", ".")
        props[name.replace("\0", "-").replace("\1", "_").lower()] = v
    return props


def _listener_list(value: str) -> list[tuple[str, str, int]]:
    out = []
    for item in filter(None, (x.strip() for x in value.split(","))):
        m = re.fullmatch(r"([A-Za-z0-9_]+)://([^:]*):(\d+)", item)
        assert m, f"bad listener {item!r}"
        out.append((m.group(1), m.group(2), int(m.group(3))))
    return out


def kafka_listeners(kafka: dict[str, Any]) -> dict[str, list[tuple[str, str, int]]]:
    p = kafka_properties(kafka)
    return {"listeners": _listener_list(p["listeners"]), "advertised": _listener_list(p["advertised.listeners"])}


def test_kafka_is_a_single_kraft_node(services):
    kafka = services["kafka"]
    repo, tag = image_and_tag(kafka["image"])
    assert repo == "apache/kafka" and re.fullmatch(r"4\.1\.\d+", tag), f"expected apache/kafka:4.1.x, got {kafka['image']}"
    p = kafka_properties(kafka)
    unknown = sorted(set(p) - KNOWN_KAFKA_PROPERTIES)
    assert not unknown, f"unknown Kafka properties (typo?) {unknown}"
    assert {r.strip() for r in p["process.roles"].split(",")} == {"broker", "controller"}
    node_id = int(p["node.id"])

    protocol_map = dict(item.split(":") for item in p["listener.security.protocol.map"].split(","))
    listeners = _listener_list(p["listeners"])
    names = [n for n, _, _ in listeners]
    assert len(names) == len(set(names)) and set(names) <= set(protocol_map), "listeners vs protocol map"
    ports = [port for _, _, port in listeners]
    assert len(ports) == len(set(ports)), "two listeners on one port"
    controller = p["controller.listener.names"]
    assert controller in names
    assert p["inter.broker.listener.name"] in names and p["inter.broker.listener.name"] != controller
    advertised = _listener_list(p["advertised.listeners"])
    assert all(n in names and n != controller for n, _, _ in advertised), "advertise broker listeners only"
    listener_port = {n: port for n, _, port in listeners}
    assert all(listener_port[n] == port for n, _, port in advertised), "advertised port differs from the listener's"
    voters = [v.split("@") for v in p["controller.quorum.voters"].split(",")]
    assert [int(i) for i, _ in voters] == [node_id], "single node: the only voter is this node"
    vhost, _, vport = voters[0][1].rpartition(":")
    assert vhost in ("kafka", kafka.get("hostname")) and int(vport) == listener_port[controller]

    # a single broker: every internal topic must be creatable
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "share.coordinator.state.topic.replication.factor",
                "share.coordinator.state.topic.min.isr"):
        assert p.get(key) == "1", f"{key} must be 1 on a single node (got {p.get(key)})"
    for key in ("default.replication.factor", "min.insync.replicas"):
        assert p.get(key, "1") == "1", key

    cluster_id = env_of(kafka).get("CLUSTER_ID")
    assert cluster_id, "CLUSTER_ID fixes the KRaft cluster id (the storage is formatted once)"
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "CLUSTER_ID must be a base64url UUID (22 chars)"
    assert uuid.UUID(bytes=base64.urlsafe_b64decode(cluster_id + "==")).int != 0
    assert p["log.dirs"].startswith("/")

    # published ports are listeners, and an external client gets an address it can reach
    published = {cport: hport for _, hport, cport, _ in map(parse_port, kafka.get("ports") or [])}
    for cport, hport in published.items():
        assert cport in listener_port.values() and cport != listener_port[controller], f"port {cport} is no broker listener"
        name = next(n for n, port in listener_port.items() if port == cport)
        assert protocol_map[name] == "SASL_SSL", f"published listener {name} is {protocol_map[name]}, not SASL_SSL"
        adv = [a for a in advertised if listener_port[a[0]] == cport]
        assert adv and adv[0][1] not in ("kafka", "0.0.0.0", ""), "externally published listener must advertise a host name"
        assert hport == adv[0][2], "the advertised external port must be the published host port"


def test_clickhouse_server(services):
    ch = services["clickhouse"]
    repo, tag = image_and_tag(ch["image"])
    assert repo == "clickhouse/clickhouse-server" and re.match(r"2[5-9]\.\d+", tag), ch["image"]
    env = env_of(ch)
    assert env.get("CLICKHOUSE_USER") and env["CLICKHOUSE_USER"] != "default"
    assert env.get("CLICKHOUSE_PASSWORD"), "ClickHouse needs a password"
    assert env.get("CLICKHOUSE_DB") == "flowmon"


# =====================================================================================
# Dockerfile
# =====================================================================================
def dockerfile_instructions() -> list[tuple[str, str]]:
    lines, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        lines.append(buf + stripped)
        buf = ""
    assert not buf, "Dockerfile ends in a line continuation"
    out = []
    for line in lines:
        instr, _, args = line.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def _exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec (JSON) form: {args}"
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(x, str) for x in value)
    return value


def dockerfile_cmd() -> list[str]:
    cmds = [a for i, a in dockerfile_instructions() if i == "CMD"]
    return _exec_form(cmds[-1]) if cmds else []


def test_dockerfile_builds_the_worker_image():
    ins = dockerfile_instructions()
    froms = [a for i, a in ins if i == "FROM"]
    assert froms and froms[-1].split()[0] == "python:3.11-slim", froms

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    entry = [a for i, a in ins if i == "ENTRYPOINT"]
    assert entry, "no ENTRYPOINT"
    entrypoint = _exec_form(entry[-1])
    assert entrypoint[0] in scripts, f"ENTRYPOINT {entrypoint[0]!r} is not a console script of pyproject.toml {sorted(scripts)}"
    assert entrypoint == ["flowmon"]
    assert _cli_command(dockerfile_cmd()) == "worker", "default command should be `worker`"

    # Where pipeline/ and schemas/ land, and how the package is installed.
    workdir = PurePosixPath("/")
    dest: dict[str, PurePosixPath] = {}
    editable_after_copy = False
    for instr, args in ins:
        if instr == "WORKDIR":
            workdir = workdir / args
        elif instr in ("COPY", "ADD"):
            parts = [a for a in shlex.split(args) if not a.startswith("--")]
            *sources, target = parts
            for src in sources:
                assert list(REPO.glob(src)), f"{instr} source {src} does not exist in the repo"
                dest[src.strip("./").split("/")[0]] = workdir / target
        elif instr == "RUN" and re.search(r"pip install\b[^&|;]*\s-e\s+\.(\s|$)", args):
            if "pipeline" in dest and "schemas" in dest and dest["pipeline"].parent == workdir:
                editable_after_copy = True
        elif instr == "ENV":
            names = re.findall(r"(?:^|\s)(FLOWMON_[A-Z_]+)=", " " + args)
            unknown = [n for n in names if n not in SETTINGS_ENV]
            assert not unknown, f"Dockerfile ENV {unknown} are not Settings fields"
    assert "pipeline" in dest and "schemas" in dest, "the image needs pipeline/ and schemas/"
    # pipeline/config.py: SCHEMAS_DIR = pipeline/schemas, a relative link to <parent of the package>/schemas
    import pipeline
    assert (Path(pipeline.__file__).parent / "schemas").is_symlink()
    assert SCHEMAS_DIR.resolve() == Path(pipeline.__file__).resolve().parent.parent / "schemas"
    assert dest["schemas"] == dest["pipeline"].parent / "schemas", \
        f"schemas/ ({dest['schemas']}) must sit next to pipeline/ ({dest['pipeline']})"
    assert editable_after_copy, "install editable (pip install -e .) from the directory holding pipeline/ and schemas/"

    exposed = {int(p.split("/")[0]) for i, a in ins if i == "EXPOSE" for p in a.split()}
    compose = load_compose(SECRETS)
    for name, s in worker_services(compose["services"]).items():
        assert settings_of(s).metrics_port in exposed, f"{name}: metrics port not EXPOSEd"


# =====================================================================================
# Prometheus
# =====================================================================================
def _prom_config() -> dict[str, Any]:
    return yaml.safe_load(PROMETHEUS_FILE.read_text())


def exported_metric_names() -> set[str]:
    from pipeline.runtime.metrics import Metrics

    names = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        else:
            names.add(family.name)
    return names


def test_prometheus_scrapes_the_workers(services):
    cfg = _prom_config()
    assert cfg["scrape_configs"], "no scrape_configs"
    prom = services["prometheus"]
    assert bind_target_of(prom, PROMETHEUS_FILE) == "/etc/prometheus/prometheus.yml"
    targets: set[tuple[str, int]] = set()
    for job in cfg["scrape_configs"]:
        for sc in job.get("static_configs") or []:
            for t in sc["targets"]:
                host, _, port = t.rpartition(":")
                targets.add((host, int(port)))
        for dns in job.get("dns_sd_configs") or []:
            assert dns.get("type", "SRV") == "A" and dns.get("port"), "A-record discovery needs a port"
            targets |= {(n, int(dns["port"])) for n in dns["names"]}
    for name, s in worker_services(services).items():
        port = settings_of(s).metrics_port
        assert (name, port) in targets, f"Prometheus does not scrape {name}:{port} (targets {sorted(targets)})"


# =====================================================================================
# Grafana: provisioning
# =====================================================================================
def _provisioned_datasources() -> list[dict[str, Any]]:
    out = []
    for f in sorted((GRAFANA_PROVISIONING / "datasources").glob("*.y*ml")):
        doc = yaml.safe_load(f.read_text())
        assert doc.get("apiVersion") == 1, f
        out += doc.get("datasources") or []
    return out


CLICKHOUSE_USERS_D = DEPLOY / "clickhouse" / "users.d"


def readonly_clickhouse_user(services) -> tuple[str, str]:
    """The one user of deploy/clickhouse/users.d (mounted into the clickhouse service): its name and the
    clickhouse container's variable holding its password. Checks it can only read flowmon's database."""
    import xml.etree.ElementTree as ET

    ch = services["clickhouse"]
    files = sorted(CLICKHOUSE_USERS_D.glob("*.xml"))
    assert files, "no ClickHouse users.d file"
    (user,) = [u for f in files for u in ET.parse(f).getroot().find("users")]
    for f in files:
        assert bind_target_of(ch, f) == f"/etc/clickhouse-server/users.d/{f.name}", f"{f.name} is not mounted"
    root = ET.parse(files[0]).getroot()
    password_env = user.find("password").get("from_env")
    assert password_env and password_env in env_of(ch), "the password comes from the clickhouse container's env"
    assert user.findtext("access_management", "0").strip() == "0", "the read-only user must not manage access"
    grants = [q.text.strip() for q in user.find("grants")]
    assert grants == [f"GRANT SELECT ON {env_of(ch)['CLICKHOUSE_DB']}.*"], grants
    profile = root.find(f"profiles/{user.findtext('profile')}")
    assert profile is not None and profile.findtext("readonly") in ("1", "2"), "its profile must be readonly"
    return user.tag, password_env


def test_clickhouse_writer_cannot_manage_access(services):
    assert env_of(services["clickhouse"]).get("CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT", "0") == "0"


def test_grafana_provisioning(services):
    graf = services["grafana"]
    repo, tag = image_and_tag(graf["image"])
    assert repo in ("grafana/grafana", "grafana/grafana-oss", "grafana/grafana-enterprise") and tag[0].isdigit()
    assert bind_target_of(graf, GRAFANA_PROVISIONING) == "/etc/grafana/provisioning"
    env = env_of(graf)
    install = ",".join(env.get(k, "") for k in ("GF_PLUGINS_PREINSTALL_SYNC", "GF_PLUGINS_PREINSTALL", "GF_INSTALL_PLUGINS"))
    assert CLICKHOUSE_PLUGIN in [p.split("@")[0].split()[0] for p in install.split(",") if p.strip()], \
        "the ClickHouse plugin is not installed"

    ds = _provisioned_datasources()
    uids = [d["uid"] for d in ds]
    assert len(uids) == len(set(uids)), "datasource uids must be unique"
    ch = [d for d in ds if d["type"] == CLICKHOUSE_PLUGIN]
    assert len(ch) == 1, "exactly one ClickHouse datasource"
    jd = ch[0]["jsonData"]
    ch_env = env_of(services["clickhouse"])

    def resolve(value: Any) -> str:  # Grafana's $VAR / ${VAR} interpolation in provisioning files
        def sub(m):
            name = m.group(1) or m.group(2)
            assert name in env, f"provisioning uses ${name}, not set in the grafana container"
            return env[name]
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, str(value))

    assert jd["host"] == "clickhouse" and int(jd["port"]) == 8123 and jd["protocol"] == "http"
    # Grafana logs in as the read-only user of deploy/clickhouse/users.d, never as the writer
    user, password_env = readonly_clickhouse_user(services)
    assert resolve(jd["username"]) == user != ch_env["CLICKHOUSE_USER"]
    assert resolve(ch[0]["secureJsonData"]["password"]) == ch_env[password_env]
    assert jd["defaultDatabase"] == ch_env["CLICKHOUSE_DB"]
    for d in ds:
        if d["type"] == "prometheus":
            u = urlsplit(d["url"])
            assert u.hostname in services and u.port == 9090, d["url"]

    providers = []
    for f in sorted((GRAFANA_PROVISIONING / "dashboards").glob("*.y*ml")):
        providers += yaml.safe_load(f.read_text()).get("providers") or []
    assert providers, "no dashboard provider"
    for p in providers:
        path = p["options"]["path"]
        source = container_path_to_repo(graf, path)
        assert source is not None and source.resolve() == DASHBOARDS_DIR.resolve(), \
            f"provider path {path} is not the mounted deploy/grafana/dashboards"
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        src = container_path_to_repo(graf, home)
        assert src is not None and src.is_file(), f"home dashboard {home} is not a mounted file"


# =====================================================================================
# Grafana: dashboards
# =====================================================================================
def dashboards() -> dict[str, dict[str, Any]]:
    files = sorted(DASHBOARDS_DIR.glob("*.json"))
    assert files, "no dashboard JSON"
    return {f.name: json.loads(f.read_text()) for f in files}


def all_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out += p.get("panels", [])  # collapsed rows
    return out


def clickhouse_queries(dash: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    """(where, sql, format) of every ClickHouse query: panel targets and query variables."""
    out = []
    for p in all_panels(dash):
        for t in p.get("targets", []):
            ds = t.get("datasource") or p.get("datasource") or {}
            if ds.get("type") == CLICKHOUSE_PLUGIN:
                out.append((f"panel {p.get('title')!r} {t.get('refId')}", t["rawSql"], t.get("format")))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query" and (v.get("datasource") or {}).get("type") == CLICKHOUSE_PLUGIN:
            q = v["query"] if isinstance(v["query"], str) else v["query"]["rawSql"]
            out.append((f"variable {v['name']}", q, None))
    return out


def test_dashboards_parse_and_use_provisioned_datasources():
    ds = {d["uid"]: d["type"] for d in _provisioned_datasources()}
    uids = []
    for fname, dash in dashboards().items():
        uids.append(dash["uid"])
        assert dash.get("title"), fname
        panels = all_panels(dash)
        assert panels, f"{fname}: no panels"
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{fname}: duplicate panel ids"
        for p in panels:
            if p.get("type") == "row":
                continue
            assert p.get("title") and p.get("gridPos"), f"{fname}: panel {p.get('id')} needs a title and gridPos"
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"{fname}: {p['title']} is wider than the grid"
            for ref in [p.get("datasource")] + [t.get("datasource") for t in p.get("targets", [])]:
                if ref:
                    assert ds.get(ref["uid"]) == ref["type"], f"{fname}: {p['title']}: datasource {ref} not provisioned"
            assert p.get("targets"), f"{fname}: {p['title']} has no query"
            for t in p["targets"]:
                if (t.get("datasource") or p["datasource"])["type"] == CLICKHOUSE_PLUGIN:
                    assert t.get("editorType") == "sql" and t.get("rawSql", "").strip(), f"{fname}: {p['title']}"
                    # plugin: format 0 = time series, 1 = table
                    expected = 0 if p["type"] == "timeseries" else 1
                    assert t.get("format") == expected, f"{fname}: {p['title']}: format {t.get('format')}"
                    assert t.get("queryType") == ("timeseries" if expected == 0 else "table"), p["title"]
                elif (t.get("datasource") or p["datasource"])["type"] == "prometheus":
                    assert t.get("expr"), f"{fname}: {p['title']}: empty PromQL"
    assert len(uids) == len(set(uids)), "dashboard uids must be unique"


def test_pipeline_dashboard_promql_names_exported_metrics():
    names = exported_metric_names()
    jobs = {j["job_name"] for j in _prom_config()["scrape_configs"]}
    n = 0
    for fname, dash in dashboards().items():
        for p in all_panels(dash):
            for t in p.get("targets", []):
                expr = t.get("expr")
                if not expr:
                    continue
                n += 1
                for metric in re.findall(r"\bflowmon_[a-z0-9_]+\b", expr):
                    assert metric in names, f"{fname}: {p['title']}: {metric} is not exported (have {sorted(names)})"
                for job in re.findall(r'job\s*=\s*"([^"]+)"', expr):
                    assert job in jobs, f"{fname}: {p['title']}: no scrape job {job!r}"
    assert n, "no Prometheus panel"


# ---- the schema: tables, views and their columns, from schemas/clickhouse/*.sql ----------
_IDENT = r"`?([A-Za-z_][A-Za-z0-9_]*)`?"


def strip_sql(sql: str) -> str:
    """Comments removed, string literals emptied ('...' -> '')."""
    sql = re.sub(r"/\*.*?\*/", " ", sql, flags=re.S)
    out, i = [], 0
    while i < len(sql):
        c = sql[i]
        if c == "'":
            j = i + 1
            while j < len(sql) and sql[j] != "'":
                j += 2 if sql[j] == "\\" else 1
            out.append("''")
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = len(sql) if j < 0 else j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def split_top_level(text: str, sep: str = ",") -> list[str]:
    parts, depth, cur = [], 0, []
    for c in text:
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        if c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _balanced(text: str, start: int) -> tuple[str, int]:
    """Contents of the parenthesis opening at text[start], and the index after it."""
    assert text[start] == "("
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i], i + 1
    raise ValueError("unbalanced parentheses")


def schema_objects() -> dict[str, dict[str, Any]]:
    """name -> {'kind': 'table'|'view', 'columns': [...], 'engine': str}.

    Tables as pipeline.clickhouse.columns reads them (the parser the sink uses); views
    parsed here, in file order (a view may read a table or an earlier view)."""
    from pipeline.clickhouse.columns import tables

    objects: dict[str, dict[str, Any]] = {
        t.name: {"kind": "table", "columns": list(t.names), "engine": t.engine} for t in tables().values()}
    files = sorted((SCHEMAS_DIR / "clickhouse").glob("*.sql"))
    assert files
    for f in files:
        sql = strip_sql(f.read_text())
        for m in re.finditer(r"CREATE\s+(?:MATERIALIZED\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _IDENT
                             + r"\s+AS\s+SELECT\s+(.*?)\s+FROM\s+" + _IDENT, sql, re.I | re.S):
            name, select_list, source = m.group(1), m.group(2), m.group(3)
            if select_list.strip() == "*":
                cols = list(objects[source]["columns"])
            else:
                cols = []
                for item in split_top_level(select_list):
                    alias = re.search(r"\bAS\s+" + _IDENT + r"\s*$", item, re.I)
                    bare = re.fullmatch(_IDENT, item)
                    assert alias or bare, f"{f.name}: view {name}: cannot name column {item!r}"
                    cols.append((alias or bare).group(1))
            objects[name] = {"kind": "view", "columns": cols, "engine": "View", "source": source}
    return objects


SQL_KEYWORDS = {
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "AS", "GROUP", "BY", "ORDER", "HAVING", "LIMIT",
    "OFFSET", "ASC", "DESC", "FINAL", "DISTINCT", "WITH", "FILL", "STEP", "INTERVAL", "MILLISECOND", "SECOND",
    "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR", "CASE", "WHEN", "THEN", "ELSE", "END", "IS", "NULL",
    "LIKE", "ILIKE", "BETWEEN", "ON", "JOIN", "LEFT", "RIGHT", "INNER", "OUTER", "USING", "UNION", "ALL",
    "TRUE", "FALSE", "NULLS", "FIRST", "LAST", "GLOBAL", "SETTINGS", "CROSS", "EXCEPT", "NAN",
}
# ClickHouse functions the dashboards may call (and the plugin's macros, written as
# functions once their '$' is dropped). A name outside the list is most likely a typo.
SQL_FUNCTIONS = {
    "sum", "avg", "min", "max", "count", "any", "anyLast", "argMax", "argMin", "uniq", "uniqExact", "quantile",
    "quantiles", "quantileExact", "median", "sumMap", "maxMap", "groupArray", "if", "multiIf", "nullIf",
    "coalesce", "ifNull", "greatest", "least", "round", "floor", "ceil", "intDiv", "abs", "concat", "substring",
    "lower", "upper", "toString", "toDateTime", "toDateTime64", "toDate", "toStartOfInterval", "toStartOfMinute",
    "toStartOfFiveMinutes", "toStartOfHour", "toStartOfDay", "toUnixTimestamp", "fromUnixTimestamp64Milli",
    "formatReadableSize", "length", "tuple", "now", "exp2", "log2", "sqrt", "pow", "countIf", "maxIf",
    "groupUniqArray", "startsWith", "notEmpty", "empty", "indexOf", "toFloat64", "toUInt32", "arrayElement",
    "arrayFirstIndex", "arrayCumSum", "arraySum", "mapKeys", "mapValues", "nan", "arrayExists", "arraySort", "arrayDistinct", "arrayFilter",
    "arrayMap", "throwIf", "bitCount", "dateDiff",
    "__timeFilter", "__timeFilter_ms", "__timeInterval", "__timeInterval_ms", "__dateFilter", "__dateTimeFilter",
    "__dt", "__conditionalAll", "__timeFrom", "__timeTo",
}
_GRAFANA_VAR_RE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]|\$(\w+)")


def static_sql_problems(sql: str, objects: dict[str, dict[str, Any]]) -> list[str]:
    """Names in *sql* that are neither keywords, known functions, aliases, known tables
    nor columns of the tables the query reads; tables read without FINAL."""
    s = strip_sql(sql)
    s = re.sub(r"\$(__\w+)\s*\(", r"\1(", s)  # macro calls -> function calls
    s = re.sub(r"\$__\w+", "0", s)  # value macros ($__interval_s, $__fromTime, ...)
    s = _GRAFANA_VAR_RE.sub("0", s)  # template variables
    problems = []
    tokens = re.findall(r"\"[^\"]*\"|`[^`]*`|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[A-Za-z_][A-Za-z0-9_]*|\S", s)
    tables = []
    # common table expressions (WITH name AS (...), name AS (...)) are tables of the query itself: their
    # columns are its aliases; lambda parameters (x -> ...) are names too
    ctes = {tokens[i].strip("`") for i in range(len(tokens) - 2)
            if tokens[i + 1].upper() == "AS" and tokens[i + 2] == "(" and i and tokens[i - 1] in ("WITH", ",")}
    lambdas = {tokens[i] for i in range(len(tokens) - 2) if tokens[i + 1] == "-" and tokens[i + 2] == ">"}
    for i, tok in enumerate(tokens):
        if i and tokens[i - 1].upper() in ("FROM", "JOIN") and re.match(r"[A-Za-z_`]", tok):
            name = tok.strip("`")
            if name in ctes:
                continue
            if name not in objects:
                problems.append(f"unknown table/view {name!r}")
                continue
            tables.append(name)
            if objects[name]["engine"] == "ReplacingMergeTree":
                nxt = tokens[i + 1].upper() if i + 1 < len(tokens) else ""
                if nxt != "FINAL":
                    problems.append(f"{name} read without FINAL (duplicates not merged yet would count)")
    if not tables:
        problems.append("reads no table")
    columns = {c for t in tables for c in objects[t]["columns"]}
    aliases = {tokens[i + 1].strip('"`') for i, t in enumerate(tokens[:-1]) if t.upper() == "AS"}
    for i, tok in enumerate(tokens):
        if not re.match(r"[A-Za-z_`]", tok):
            continue
        name = tok.strip("`")
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        prev = tokens[i - 1] if i else ""
        if name.upper() in SQL_KEYWORDS or prev.upper() == "AS" or name in objects or name in aliases \
                or name in ctes or name in lambdas:
            continue
        if nxt == "(":
            if name not in SQL_FUNCTIONS and name.lower() not in SQL_FUNCTIONS:
                problems.append(f"unknown function {name}()")
            continue
        if name not in columns:
            problems.append(f"unknown column {name!r} (tables {tables})")
    return problems


def test_schema_parser_sees_the_schema():
    objects = schema_objects()
    assert {"flow_windows", "deadletter", "az_traffic", "flow_windows_final", "deadletter_final"} <= set(objects)
    assert objects["flow_windows"]["engine"] == "ReplacingMergeTree"
    assert {"src_subnet", "dst_subnet", "window_start", "bytes", "retransmissions", "rtt_mean_us",
            "rtt_p99_us"} <= set(objects["flow_windows"]["columns"])
    assert {"reason", "at", "samples"} <= set(objects["deadletter"]["columns"])
    assert {"category", "src_az", "dst_az", "bytes", "window_start"} <= set(objects["az_traffic"]["columns"])
    assert objects["flow_windows_final"]["columns"] == objects["flow_windows"]["columns"]


def test_static_sql_check_catches_mistakes():
    objects = schema_objects()
    ok = "SELECT window_start AS time, sum(bytes) AS b FROM flow_windows FINAL WHERE $__timeFilter(window_start) GROUP BY time"
    assert static_sql_problems(ok, objects) == []
    assert any("unknown column 'byts'" in p for p in static_sql_problems(ok.replace("sum(bytes)", "sum(byts)"), objects))
    assert any("FINAL" in p for p in static_sql_problems(ok.replace(" FINAL", ""), objects))
    assert any("unknown table" in p for p in static_sql_problems(ok.replace("flow_windows", "flow_window"), objects))
    assert any("unknown function" in p for p in static_sql_problems(ok.replace("sum(", "summ("), objects))
    # CTEs and lambdas are names of the query; a misspelt column inside a CTE is still caught
    cte = ("WITH t AS (SELECT window_start, sum(bytes) AS b FROM flow_windows FINAL GROUP BY window_start) "
           "SELECT window_start AS time, b, arrayFirstIndex(c -> c > 0, [b]) AS i FROM t")
    assert static_sql_problems(cte, objects) == []
    assert any("'byts'" in p for p in static_sql_problems(cte.replace("sum(bytes)", "sum(byts)"), objects))
    # a column of another table is not accepted
    assert any("'reason'" in p for p in static_sql_problems(ok.replace("sum(bytes)", "any(reason)"), objects))


def test_dashboard_sql_names_only_schema_tables_and_columns():
    objects = schema_objects()
    n = 0
    for fname, dash in dashboards().items():
        for where, sql, _ in clickhouse_queries(dash):
            n += 1
            problems = static_sql_problems(sql, objects)
            assert not problems, f"{fname}: {where}: {problems}\n{sql}"
    assert n >= 8


def test_flows_dashboard_is_the_named_queries():
    """Every ClickHouse query of the flows dashboard is a named query (schemas/queries) in Grafana's form, every
    named query meant for Grafana has a panel, and the file is what the generator writes (not stale)."""
    from pipeline.views.grafana import dashboard
    from pipeline.views.queries import grafana_sql, load

    dash = dashboards()["flowmon-flows.json"]
    assert dash == dashboard(), "stale: python -m pipeline.views.grafana > deploy/grafana/dashboards/flowmon-flows.json"
    named = {grafana_sql(q.sql): name for name, q in load().items()}
    panel_sql = [sql for where, sql, _ in clickhouse_queries(dash) if where.startswith("panel")]
    unknown = [sql[:80] for sql in panel_sql if sql not in named]
    assert not unknown, f"panels whose SQL is not a named query: {unknown}"
    wanted = {name for name, q in load().items() if q.grafana != "none"}
    assert wanted == {named[sql] for sql in panel_sql}, "named queries meant for Grafana without a panel"
    assert {"az_matrix", "traffic_by_category", "top_pairs", "alerts", "deadletters_by_reason"} <= wanted


# ---- the SQL really runs: chdb, migrated schema, sample rows -------------------------------
T0 = 1_764_000_000  # a multiple of 600 and 3600
TIME_FROM, TIME_TO, INTERVAL_S = T0 - 3600, T0 + 2 * 3600, 60


def expand_macros(sql: str) -> str:
    """The plugin's server-side macros (pkg/macros/macros.go) for the test time range."""

    def call(name: str, args: list[str]) -> str:
        def one():
            assert len(args) == 1, f"$__{name} takes one argument"
            return args[0]

        if name == "timeFilter":
            return f"{one()} >= toDateTime({TIME_FROM}) AND {one()} <= toDateTime({TIME_TO})"
        if name == "timeFilter_ms":
            return (f"{one()} >= fromUnixTimestamp64Milli({TIME_FROM * 1000}) AND "
                    f"{one()} <= fromUnixTimestamp64Milli({TIME_TO * 1000})")
        if name == "timeInterval":
            return f"toStartOfInterval(toDateTime({one()}), INTERVAL {INTERVAL_S} second)"
        if name == "dateFilter":
            return f"{one()} >= toDate({TIME_FROM}) AND {one()} <= toDate({TIME_TO})"
        raise AssertionError(f"unknown macro $__{name}(...)")

    values = {"fromTime": f"toDateTime({TIME_FROM})", "toTime": f"toDateTime({TIME_TO})",
              "interval_s": str(INTERVAL_S), "interval_ms": str(INTERVAL_S * 1000)}
    out, i = [], 0
    while True:
        m = re.compile(r"\$__(\w+)").search(sql, i)
        if not m:
            out.append(sql[i:])
            return "".join(out)
        out.append(sql[i : m.start()])
        name = m.group(1)
        if m.end() < len(sql) and sql[m.end()] == "(":
            body, end = _balanced(sql, m.end())
            out.append(call(name, [expand_macros(a) for a in split_top_level(body)]))
            i = end
        else:
            assert name in values, f"unknown macro $__{name}"
            out.append(values[name])
            i = m.end()


def expand_variables(sql: str, values: dict[str, list[str] | None]) -> str:
    """Grafana's template variables; None = 'All' selected. $__conditionalAll is the plugin's (frontend)."""

    def conditional_all(text: str) -> str:
        m = re.search(r"\$__conditionalAll\(", text)
        if not m:
            return text
        body, end = _balanced(text, m.end() - 1)
        cond, var = split_top_level(body)
        name = _GRAFANA_VAR_RE.fullmatch(var.strip())
        assert name, f"$__conditionalAll second argument must be a variable: {var!r}"
        vname = next(g for g in name.groups() if g and g in values)
        repl = "1=1" if values[vname] is None else f"({cond})"
        return text[: m.start()] + repl + conditional_all(text[end:])

    def var(m: re.Match) -> str:
        name = m.group(1) or m.group(3) or m.group(5)
        fmt = m.group(2) or m.group(4)
        if name.startswith("__"):
            return m.group(0)  # a macro, not a variable
        assert name in values, f"unknown template variable ${name}"
        vals = values[name] if values[name] is not None else ["all-values"]
        if fmt in ("singlequote", "sqlstring"):
            return ",".join("'" + v.replace("'", "\\'") + "'" for v in vals)
        assert fmt in (None, "raw", "csv"), f"format :{fmt} not handled by the test"
        return ",".join(vals)

    return _GRAFANA_VAR_RE.sub(var, conditional_all(sql))




@pytest.fixture
def migrated(chdb_dsn):
    from pipeline.clickhouse.client import connect
    from pipeline.clickhouse.migrations import migrate
    from pipeline.clickhouse.writer import WindowSink
    from tests.support.records import example_window

    database = f"deploy_{uuid.uuid4().hex[:12]}"
    client = connect(chdb_dsn, database=database)
    migrate(client)
    sink = WindowSink(client)
    windows = []
    pairs = [("subnet-1a", "use1-az1", "subnet-1c", "use1-az2", "vpc-1"),  # inter-az
             ("subnet-1a", "use1-az1", "subnet-1a", "use1-az1", "vpc-1"),  # intra-az
             ("subnet-1c", "use1-az2", "subnet-9x", "use1-az2", "vpc-2")]  # inter-vpc
    for k in range(6):
        for j, (ss, sa, ds, da, dv) in enumerate(pairs):
            windows.append(example_window(
                src_subnet=ss, src_az=sa, dst_subnet=ds, dst_az=da, dst_vpc=dv, window_start=T0 + 600 * k,
                bytes=1_000_000 * (j + 1) + k, retransmissions=k % 3, timeouts=k % 2, closed_at=T0 + 600 * k + 700))
    for w in windows:  # one reporting instance per window carries it all (what the aggregate stage emits)
        w["instances"] = [{"instance": f"{w['src_subnet']}/0", **{k: w[k] for k in (
            "bytes_sent", "bytes_received", "bytes", "retransmissions", "timeouts", "flows", "samples", "rtt_count",
            "rtt_sum_us")}}]
    sink.write_windows(windows)
    sink.write_instance_windows(windows)
    sink.write_windows([dict(windows[0], closed_at=windows[0]["closed_at"] + 1)])  # a re-emitted copy
    sink.write_deadletters([
        {"version": 1, "reason": reason, "field": None, "detail": "test", "stage": "ingest",
         "source": {"topic": "flow-reports-v1", "partition": 0, "offset": n}, "samples": 1,
         "payload": {"n": n}, "at": T0 + 60 * n + 0.5}
        for n, reason in enumerate(["malformed_json", "late", "late", "missing_field"])])
    from tests.support.events import example_event
    events = [example_event(alert_id=f"{n:016x}", src_subnet=ss, dst_subnet=ds, first_seen=T0 + 600 * n,
                            last_seen=T0 + 600 * n, at=T0 + 600 * n, window_start=T0 + 600 * n)
              for n, (ss, _, ds, _, _) in enumerate(pairs)]
    events += [dict(e, event="resolved", seq=1, at=e["at"] + 120, reason="normal") for e in events]
    sink.write_anomalies(events)
    sink.write_anomalies(events[:2])  # a replayed batch
    assert client.command("SELECT count() FROM flow_anomalies FINAL") == len(events)
    assert client.command("SELECT countIf(state = 'resolved') FROM alerts") == len(pairs)
    sink.write_attributions([
        {"version": 1, "alert_id": e["alert_id"], "at": e["at"], "scope": "pair", "instance": None,
         "src_subnet": e["src_subnet"], "dst_subnet": e["dst_subnet"], "metric": "retrans_rate", "family": "retrans",
         "cause": "infrastructure", "element_kind": "az_pair", "element": "use1-az1|use1-az2", "confidence": 0.9,
         "purity": 1.0, "reporters_crossing": 5, "reporters_degraded": 5, "degraded": ["i-1", "i-2"], "keys_scored": 7,
         "keys_degraded": 7, "exonerating": 0, "exonerating_reporters": [], "keys_attributed": 3,
         "evidence_level": "instance", "attributed_at": e["at"] + 31.0} for e in events[:len(pairs)]])
    sink.write_nhi([{"version": 1, "scope_kind": "az_pair", "scope": "use1-az1|use1-az2", "status": "degraded",
                     "start": T0, "end": end, "element": "az_pair:use1-az1|use1-az2", "updated": T0 + n}
                    for n, end in enumerate([None, T0 + 600])])  # opened, then closed: one period
    assert client.command("SELECT count() FROM nhi FINAL WHERE end IS NOT NULL") == 1
    # a monitor over subnet-1a, with its windows and one degraded period (what the monitor agents emit)
    from pipeline.monitors.definition import parse_monitor
    from pipeline.monitors.evaluate import monitor_row
    mon = parse_monitor({"name": "web", "local": ["subnet:subnet-1a"], "remote": "any"})
    sink.write_monitors([monitor_row(b"web", mon.to_json(), 1000)])
    sink.write_monitor_windows([{**{k: w[k] for k in (
        "src_subnet", "src_az", "src_vpc", "dst_subnet", "dst_az", "dst_vpc", "window_start", "window_s", "bytes",
        "bytes_sent", "bytes_received", "retransmissions", "timeouts", "flows", "rtt_count", "rtt_sum_us", "rtt_hist",
        "closed_at")}, "version": 1, "monitor": "web"} for w in windows if w["src_subnet"] == "subnet-1a"])
    sink.write_monitor_nhi([{"version": 1, "monitor": "web", "scope_kind": "az_pair", "scope": "use1-az1|use1-az2",
                             "status": "degraded", "start": T0, "end": T0 + 600, "element": "az_pair:use1-az1|use1-az2",
                             "updated": T0 + 1.0}])
    from pipeline.views.queries import run
    series = run(client, "monitor_series", monitor="web", **{"from": TIME_FROM, "to": TIME_TO})
    assert [(int(r["time"].timestamp()), r["nhi"]) for r in series] == \
        [(T0 + 600 * k, "degraded" if k == 0 else "healthy") for k in range(6)]
    assert client.command("SELECT count() FROM alerts_attributed WHERE cause = 'infrastructure'") == len(pairs)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {database}", use_database=False)
    client.close()


def test_schema_parser_matches_clickhouse(migrated):
    for name, obj in schema_objects().items():
        described = [r[0] for r in migrated.query(f"DESCRIBE TABLE {name}").result_rows]
        assert described == obj["columns"], name


def _variable_values(dash: dict[str, Any], client) -> dict[str, list[str]]:
    out = {}
    for v in dash.get("templating", {}).get("list", []):
        if v["type"] == "query":
            sql = expand_macros(v["query"] if isinstance(v["query"], str) else v["query"]["rawSql"])
            rows = client.query(sql).result_rows
            assert rows, f"variable {v['name']} has no values on the sample data"
            out[v["name"]] = [str(rows[0][0])]
        elif v["type"] in ("custom", "constant", "textbox", "interval"):
            current = (v.get("current") or {}).get("value") or v["query"].split(",")[0]
            out[v["name"]] = [current] if isinstance(current, str) else list(current)
        else:
            out[v["name"]] = ["x"]
    return out


def test_dashboard_sql_runs_on_the_migrated_schema(migrated):
    n = 0
    for fname, dash in dashboards().items():
        picked = _variable_values(dash, migrated)
        multi = [v["name"] for v in dash.get("templating", {}).get("list", []) if v.get("includeAll")]
        # once with every 'All' variable selected, once with one value each
        for selection in ({**picked, **{m: None for m in multi}}, picked):
            for where, raw, fmt in clickhouse_queries(dash):
                sql = expand_macros(expand_variables(raw, selection))
                assert "$" not in sql, f"{fname}: {where}: unexpanded {sql}"
                try:
                    result = migrated.query(sql)
                except Exception as exc:  # noqa: BLE001 - report the query with the error
                    pytest.fail(f"{fname}: {where}: {exc}\n{sql}")
                n += 1
                assert result.result_rows, f"{fname}: {where}: no rows on the sample data\n{sql}"
                if fmt == 0:
                    types = [t.name for t in result.column_types]
                    assert result.column_names[0] == "time" and types[0].startswith("DateTime"), \
                        f"{fname}: {where}: a time series starts with a DateTime column 'time' ({types})"
                    assert any(re.match(r"(U?Int|Float|Decimal|Nullable\((U?Int|Float))", t) for t in types[1:]), \
                        f"{fname}: {where}: no numeric column"
    assert n >= 16


def test_dashboard_time_series_are_exact(migrated):
    """FINAL collapses the re-emitted window: the category totals sum each window once."""
    dash = dashboards()["flowmon-flows.json"]
    panel = next(p for p in all_panels(dash) if p["title"] == "Traffic by category")
    result = migrated.query(expand_macros(expand_variables(panel["targets"][0]["rawSql"], {})))
    rows = [dict(zip(result.column_names, r)) for r in result.result_rows]
    total = sum(r["bytes"] for r in rows)
    expected = sum(1_000_000 * (j + 1) + k for k in range(6) for j in range(3))
    assert total == expected
    assert {r["category"] for r in rows} == {"inter-az", "intra-az", "inter-vpc"}


# =====================================================================================
# example topology and README
# =====================================================================================
def test_topology_example_is_a_topology_and_a_scenario():
    from pipeline.sim.simulator import Simulator
    from pipeline.ingest.topology import load_topology

    topo = load_topology(TOPOLOGY_EXAMPLE)
    assert len({p.az for p in topo.instances.values()}) >= 2, "show inter-AZ traffic: several AZs"
    sim = Simulator.from_scenario(TOPOLOGY_EXAMPLE, start=T0)
    reports = list(sim.reports(600))
    assert reports and all(r["samples"] for r in reports)


def test_readme_documents_how_to_run():
    text = (DEPLOY / "README.md").read_text()
    for needle in ("docker compose up -d", "flowmon produce", "http://localhost:3000", "--scale worker=",
                   "replication factor 3", "chdb"):
        assert needle.lower() in text.lower(), f"deploy/README.md should mention {needle!r}"
    compose = load_compose(SECRETS)
    for name in compose["services"]:
        assert f"`{name}`" in text, f"deploy/README.md does not describe the {name} service"


# =====================================================================================
# the host agent: systemd unit, example config and environment, container example
# =====================================================================================
AGENT_UNIT = DEPLOY / "systemd" / "flowmon-agent.service"
AGENT_CONFIG_EXAMPLE = DEPLOY / "agent.example.yaml"
AGENT_ENV_EXAMPLE = DEPLOY / "agent.env.example"
AGENT_COMPOSE = DEPLOY / "agent" / "docker-compose.agent.yml"
UNIT_SECTIONS = {"Unit", "Service", "Install"}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: {section: {key: [values, in order]}} (keys may repeat; ``\\`` continues a line).

    >>> parse_unit("# c\\n[Service]\\nExecStart=/bin/x \\\\\\n  --y\\nEnvironment=A=1\\nEnvironment=B=2\\n")
    {'Service': {'ExecStart': ['/bin/x --y'], 'Environment': ['A=1', 'B=2']}}
    """
    out: dict[str, dict[str, list[str]]] = {}
    section: str | None = None
    buf = ""
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            buf += line[:-1].rstrip() + " "
            continue
        line, buf = buf + line, ""
        if line.startswith("["):
            assert line.endswith("]"), f"line {n}: bad section header {line!r}"
            section = line[1:-1]
            assert section not in out, f"line {n}: section [{section}] twice"
            out[section] = {}
            continue
        assert section is not None, f"line {n}: {line!r} before any [section]"
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()), f"line {n}: not key=value: {line!r}"
        out[section].setdefault(key.strip(), []).append(value.strip())
    assert not buf, "unit ends in a line continuation"
    return out


def unit_command(value: str) -> list[str]:
    """ExecStart= as argv: systemd's prefixes (``-@:+!``) removed, split as systemd splits it (shell-like)."""
    return shlex.split(value.lstrip("-@:+!"))


def _option(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def test_agent_unit_runs_the_agent_with_its_config_and_state_dir():
    from pipeline.agent.config import AgentConfig, load_agent_config

    unit = parse_unit(AGENT_UNIT.read_text())
    assert set(unit) == UNIT_SECTIONS, sorted(unit)
    svc = unit["Service"]
    one = {k: v[-1] for k, v in svc.items()}
    [exec_start] = svc["ExecStart"]
    argv = unit_command(exec_start)
    assert PurePosixPath(argv[0]).is_absolute(), "ExecStart needs an absolute path"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert PurePosixPath(argv[0]).name in scripts, f"{argv[0]} is not flowmon's console script"
    assert _cli_command(argv[1:]) == "agent"
    assert _option(argv, "--config") == "/etc/flowmon/agent.yaml"
    assert one["EnvironmentFile"] == "/etc/flowmon/agent.env", "the environment file is required (no '-' prefix)"
    assert one["Restart"] == "always"
    # the agent's state dir is the unit's StateDirectory: the one place ProtectSystem=strict leaves writable
    cfg = load_agent_config(AGENT_CONFIG_EXAMPLE)
    assert one["ProtectSystem"] == "strict" and one["NoNewPrivileges"] == "yes"
    assert Path("/var/lib") / one["StateDirectory"] == cfg.state_dir == AgentConfig.model_fields["state_dir"].default
    assert not _option(argv, "--state-dir"), "the state dir comes from the config (= StateDirectory)"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_agent_unit_hardening_keeps_netlink_and_the_host_network():
    svc = {k: v[-1] for k, v in parse_unit(AGENT_UNIT.read_text())["Service"].items()}
    # sock_diag sees the caller's network namespace only, and talks AF_NETLINK
    assert svc.get("PrivateNetwork", "no") == "no", "PrivateNetwork= hides the host's connections"
    assert svc.get("PrivateUsers", "no") == "no", "in a user namespace CAP_NET_ADMIN does not count for the host"
    families = svc.get("RestrictAddressFamilies")
    if families is not None:
        assert not families.startswith("~") and {"AF_NETLINK", "AF_INET", "AF_INET6"} <= set(families.split())
    assert "any" not in svc.get("IPAddressDeny", ""), "the agent must reach the brokers"
    # the destroy notifications need CAP_NET_ADMIN: kept in the bounding set, and effective for a non-root user
    caps = svc.get("CapabilityBoundingSet")
    assert caps is None or "CAP_NET_ADMIN" in caps.split()
    if svc.get("User", "root") not in ("root", "0") or svc.get("DynamicUser") == "yes":
        assert "CAP_NET_ADMIN" in svc.get("AmbientCapabilities", "").split()
    if svc.get("SystemCallFilter"):
        assert svc["SystemCallFilter"] == "@system-service", "netlink sockets need @system-service's socket calls"


def test_a_bad_agent_option_in_a_unit_would_be_caught():
    with pytest.raises(Exception, match="No such option: --confg"):  # the CLI's UsageError
        _cli_command(unit_command("/usr/bin/flowmon agent --confg /etc/flowmon/agent.yaml")[1:])
    with pytest.raises(AssertionError):
        parse_unit("ExecStart=/bin/true\n")  # outside a section


def test_agent_example_config_is_complete_and_places_the_host():
    from pipeline.agent.config import AgentConfig, identity, load_agent_config
    from pipeline.ingest.topology import load_topology

    cfg = load_agent_config(AGENT_CONFIG_EXAMPLE)  # unknown keys and bad values are errors
    text = AGENT_CONFIG_EXAMPLE.read_text()
    shown = set(re.findall(r"^#?\s*([a-z_]+):", text, re.M))
    assert shown == set(AgentConfig.model_fields), f"show every setting: missing {set(AgentConfig.model_fields) - shown}"
    me = identity(cfg, load_topology(TOPOLOGY_EXAMPLE))  # the example instance is in the example topology
    assert me.subnet and me.az and me.vpc


def _env_file(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(set, commented out) FLOWMON_* assignments of an environment file."""
    active, commented = {}, {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"(#\s*)?(FLOWMON_[A-Z0-9_]+)=(.*)", line.strip())
        if m:
            (commented if m.group(1) else active)[m.group(2)] = m.group(3).strip()
    return active, commented


def test_agent_env_example_names_settings_and_validates():
    active, commented = _env_file(AGENT_ENV_EXAMPLE)
    assert {"FLOWMON_BROKER", "FLOWMON_TOPOLOGY"} <= set(active)
    unknown = sorted(k for k in {**active, **commented} if k not in SETTINGS_ENV)
    assert not unknown, f"{unknown} are not pipeline.config.Settings fields"
    st = settings_of({"environment": active})
    assert st.broker != "embedded" and str(st.topology) == "/etc/flowmon/topology.yaml"
    settings_of({"environment": {**active, **commented}})  # the commented TLS+SASL block is consistent too
    unit = {k: v[-1] for k, v in parse_unit(AGENT_UNIT.read_text())["Service"].items()}
    assert unit["EnvironmentFile"].endswith("/agent.env")


def test_agent_container_uses_the_host_network_and_keeps_its_state():
    from pipeline.agent.config import identity, load_agent_config
    from pipeline.ingest.topology import load_topology

    raw = yaml.safe_load(AGENT_COMPOSE.read_text())
    with pytest.raises(ValueError, match="FLOWMON_BROKER"):
        _interpolate_tree(raw, {})  # the broker has no default
    c = _interpolate_tree(raw, {"FLOWMON_BROKER": "kafka-1.example.internal:9094"})
    [(name, agent)] = c["services"].items()
    here = AGENT_COMPOSE.parent
    assert agent.get("network_mode") == "host", "sock_diag sees only the container's own network namespace"
    assert not agent.get("ports") and not agent.get("networks"), "host networking has no ports/networks"
    # the project's image, built from the root Dockerfile
    build = agent["build"]
    assert (here / build["context"]).resolve() == REPO and build.get("dockerfile", "Dockerfile") == "Dockerfile"
    assert agent["image"] == next(s["image"] for s in load_compose(SECRETS)["services"].values() if s.get("build"))
    # the image runs as an unprivileged user: the agent needs root in the container, with NET_ADMIN
    assert str(agent.get("user", "")).split(":")[0] in ("0", "root")
    assert "NET_ADMIN" in agent.get("cap_add", []) and agent.get("cap_drop") == ["ALL"]
    assert agent.get("restart") in ("always", "unless-stopped")
    # the command parses, and its config and topology are mounted files of this repository
    argv = [str(a) for a in agent["command"]]
    assert _cli_command(argv) == "agent"
    binds = {t: (here / s).resolve() for k, s, t in mounts(agent) if k == "bind"}
    for target, source in binds.items():
        assert source.is_file(), f"{name}: bind source {source} missing"
    cfg = load_agent_config(binds[_option(argv, "--config")])
    env = env_of(agent)
    assert not sorted(k for k in env if k.startswith("FLOWMON_") and k not in SETTINGS_ENV)
    st = settings_of(agent)
    assert st.broker == "kafka-1.example.internal:9094"
    assert identity(cfg, load_topology(binds[str(st.topology)])).subnet
    # the state dir (spool, saved counters) is a named volume, declared
    state = [(k, s) for k, s, t in mounts(agent) if t == str(cfg.state_dir)]
    assert state and state[0][0] == "volume" and state[0][1] in (c.get("volumes") or {}), \
        f"{name}: mount a named volume at {cfg.state_dir}"
