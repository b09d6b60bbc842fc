"""The agent's own configuration: who this host is and what to count (a small YAML file and/or flags).

The broker, its security settings and the topology file are the shared ``FLOWMON_*``
settings (``flowmon config dump``). A file (``flowmon agent --config agent.yaml``)::

    instance: i-0abc1234          # required: this host's instance id
    # ip / subnet / az / vpc: optional when the topology file knows the instance
    interval_s: 30
    state_dir: /var/lib/flowmon-agent
    exclude: [10.254.0.0/24]      # e.g. a management network

>>> c = AgentConfig(instance="subnet-1a/0")
>>> c.interval_s, c.top_k, c.spool_max_bytes
(30, 100, 67108864)
>>> from pipeline.ingest.topology import load_topology
>>> t = load_topology({"region": "r1", "vpcs": [{"id": "vpc-a", "azs": [{"id": "az1", "subnets": [
...     {"id": "subnet-1a", "cidr": "10.0.0.0/24", "instances": 2}]}]}]})
>>> identity(c, t)
Identity(instance='subnet-1a/0', ip='10.0.0.4', subnet='subnet-1a', az='az1', vpc='vpc-a')
>>> identity(AgentConfig(instance="i-typo"), t)
Traceback (most recent call last):
...
pipeline.errors.ConfigError: instance 'i-typo' is not in the topology file and no --ip was given
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.agent.report import Identity
from pipeline.errors import ConfigError, InputError
from pipeline.ingest.topology import EXTERNAL, Topology, read_yaml_source

__all__ = ["AgentConfig", "identity", "load_agent_config"]


class AgentConfig(BaseModel):
    """``flowmon agent`` settings (file keys = option names with ``_``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance: str = Field(min_length=1, max_length=128, description="This host's instance id.")
    ip: str | None = Field(None, description="This host's address (default: the topology's, for the instance).")
    subnet: str | None = Field(None, description="Subnet id (default: from the topology).")
    az: str | None = Field(None, description="AZ id (default: from the topology).")
    vpc: str | None = Field(None, description="VPC id (default: from the topology).")
    interval_s: int = Field(30, ge=1, le=3600, description="Report interval, seconds on the agent's clock.")
    top_k: int = Field(100, ge=1, le=5000, description="Remotes reported one by one; the rest per remote subnet.")
    state_dir: Path = Field(Path("/var/lib/flowmon-agent"), description="Spool and saved counters.")
    spool_max_bytes: int = Field(64 << 20, ge=1 << 16, description="Bound of the on-disk spool (oldest dropped).")
    exclude: tuple[str, ...] = Field((), description="Remote CIDRs not counted (e.g. a management network).")
    include_loopback: bool = Field(False, description="Count loopback connections too.")
    exclude_own: bool = Field(True, description="Leave out the agent's own connections (to the broker).")
    max_message_bytes: int = Field(900_000, ge=10_000, description="Split a report above this size.")

    @field_validator("exclude")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for c in v:
            ipaddress.ip_network(c, strict=False)
        return v

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.ip_address(v)
        return v


def load_agent_config(path: Path | None, **overrides: Any) -> AgentConfig:
    """The file's settings (if any) with the non-None ``overrides`` on top; one-line errors."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = read_yaml_source(path)[0]
        except (OSError, ValueError) as e:
            raise InputError(f"agent config {path}: {e}") from None
        if not isinstance(loaded, dict):
            raise InputError(f"agent config {path}: expected a mapping of settings")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return AgentConfig(**data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "config"
        raise ConfigError(f"agent {where}: {err['msg']}",
                          hint="see `flowmon agent --help` for the settings") from None


def identity(cfg: AgentConfig, topology: Topology | None) -> Identity:
    """This host's identity: the config's values, completed from the topology (instance, then address)."""
    ip, subnet, az, vpc = cfg.ip, cfg.subnet, cfg.az, cfg.vpc
    if topology is not None:
        placed = topology.instances.get(cfg.instance)
        if placed is not None:
            if ip is None:
                ip = placed.ip
            elif ip != placed.ip:
                raise ConfigError(f"instance {cfg.instance!r} has address {placed.ip} in the topology file, "
                                  f"not {ip}", hint="fix --ip or the instance id")
        elif ip is None:
            raise ConfigError(f"instance {cfg.instance!r} is not in the topology file and no --ip was given")
        loc = topology.locate(ip)
        if loc.subnet != EXTERNAL:
            subnet, az, vpc = subnet or loc.subnet, az or loc.az, vpc or loc.vpc
    if ip is None:
        raise ConfigError(f"instance {cfg.instance!r}: no address", hint="give --ip, or FLOWMON_TOPOLOGY naming it")
    if subnet is None:
        raise ConfigError(f"instance {cfg.instance!r} at {ip}: no subnet",
                          hint="give --subnet/--az/--vpc, or a FLOWMON_TOPOLOGY whose CIDRs contain it")
    return Identity(cfg.instance, ip, subnet, az, vpc)
