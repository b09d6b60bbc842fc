"""A network lab in Linux network namespaces: real TCP between hosts, with loss and delay on the wire.

Tests use it to run iperf3/curl/ping between "instances" and compare what the flowmon
pipeline reports with what those tools measured. Needs root, iproute2 (``ip``, ``tc``,
``ss``), nftables, ethtool, iperf3, iputils-ping and curl; :class:`LabError` says what is
missing (tests then fail with that line, they never skip).

Layout (one :class:`Lab`; every name carries the lab's own tag, so labs never clash)::

    region r1, VPC vpc-a
      az-1a  subnet-1a 10.71.0.0/24   subnet-1a/0 .4 (server)   subnet-1a/1 .5
      az-1c  subnet-1c 10.71.1.0/24   subnet-1c/0 .4  subnet-1c/1 .5  subnet-1c/2 .6
      az-1d  subnet-1d 10.71.2.0/24   subnet-1d/0 .4

    host ns (eth0) ──veth── p<sub>-<n> ─┐
                                         ├─ bridge br<sub> (.1 of the subnet) ── routing ── other bridges
    host ns (eth0) ──veth── p<sub>-<n> ─┘                    (router namespace)

    host ns (mgmt0 10.254.N.k) ──veth── fm<tag>m<k> ── bridge fm<tag>br 10.254.N.1  (root namespace)

Instance n of a subnet has the (n+4)th address of its CIDR, as in a flowmon topology file
(:func:`pipeline.ingest.topology.load_topology`); :meth:`Lab.topology_yaml` writes one.

- One namespace per host; its data link is a veth to the router namespace, where each
  subnet is a bridge holding the router's address ``.1``. Hosts of a subnet talk through
  that bridge (L2, "intra-AZ"); other subnets are reached through the router (L3, "inter-AZ").
- Loss is dropped *on the wire*, in the router namespace, never on a sender's own egress
  (a drop there is a local error: TCP re-sends without counting a retransmission):
  :meth:`Lab.host_loss` on the router side of one host's link (both directions; bridge
  family rules on its port), :meth:`Lab.path_loss` on routed traffic between two subnets
  (both directions; ``inet`` forward rules by subnet CIDRs).
- Delay: :meth:`Lab.inter_az_delay` puts a ``tbf`` with a deep queue on every subnet
  bridge. Routed packets leave through the bridge device, bridged (intra-subnet) ones do
  not, so only inter-AZ traffic is shaped. ``tbf`` delays only while its queue fills:
  load the path (e.g. an iperf3) while measuring. (``netem`` is not available everywhere.)
- Offloads (GSO/TSO/GRO) are off on every data device, so a dropped packet is one MTU
  segment, not a 64 KB bundle; RPS spreads receive work by flow hash, so each flow stays on
  one CPU and is not reordered (reordering makes spurious retransmissions).
- Management: a root-namespace bridge (``lab.mgmt_ip``) and a ``mgmt0`` veth in each host,
  so a process in a host reaches a broker listening on ``lab.mgmt_ip`` while staying off
  the data network (an agent can exclude the 10.254.0.0/16 range). Each lab takes the first
  free /24 of :data:`MGMT_SUPERNET`.
- Namespaces inherit the root's default congestion control (here ``bbr``); it can't be
  changed per namespace, so :meth:`Lab.iperf3` sets it per connection (``-C cubic``).

``close()`` (also from ``with``, after a failure and ``atexit``) kills what ran in the
lab's namespaces and deletes every namespace, link and file it made. A lab whose process
died without closing is deleted by the next lab that starts (its owner pid is on record
in :data:`STATE_DIR`).

>>> Lab.short("subnet-1c/2"), INSTANCES["subnet-1c/2"]
('1c-2', '10.71.1.6')
"""

from __future__ import annotations

import atexit
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

from pipeline.runtime.process import die_with_parent

__all__ = [
    "INSTANCES",
    "MGMT_SUPERNET",
    "REGION",
    "REQUIRED_COMMANDS",
    "SUBNETS",
    "VPC",
    "Lab",
    "LabError",
    "SubnetSpec",
    "preflight",
]


class SubnetSpec(NamedTuple):
    """One subnet of the lab: id, AZ, CIDR and how many host namespaces it holds."""

    id: str
    az: str
    cidr: str
    instances: int


REGION = "r1"
VPC = "vpc-a"
#: Data network: one subnet per AZ (private ranges unlikely to be used on a CI machine).
SUBNETS: tuple[SubnetSpec, ...] = (
    SubnetSpec("subnet-1a", "az-1a", "10.71.0.0/24", 2),
    SubnetSpec("subnet-1c", "az-1c", "10.71.1.0/24", 3),
    SubnetSpec("subnet-1d", "az-1d", "10.71.2.0/24", 1),
)
#: Instance id -> data address: instance n has the (n+4)th address of its subnet's CIDR.
INSTANCES: dict[str, str] = {
    f"{s.id}/{n}": str(ipaddress.ip_network(s.cidr)[n + 4]) for s in SUBNETS for n in range(s.instances)
}
#: Management networks: each lab takes one free /24 of it for its root-namespace bridge.
MGMT_SUPERNET = "10.254.0.0/16"
#: command -> Debian package that provides it.
REQUIRED_COMMANDS = {
    "ip": "iproute2",
    "tc": "iproute2",
    "ss": "iproute2",
    "nft": "nftables",
    "ethtool": "ethtool",
    "iperf3": "iperf3",
    "ping": "iputils-ping",
    "curl": "curl",
}
#: Where labs record their owner pid (so a later lab can delete one whose process died).
STATE_DIR = Path("/run/flowmon-lab")
NS_PREFIX = "fmlab-"  # network namespaces: fmlab-<tag>-r, fmlab-<tag>-1a-0, ...
LINK_PREFIX = "fm"  # root-namespace links: fm<tag>br, fm<tag>m<k>
_TAG_HEX = 6
_ROUTER = "r"


class LabError(RuntimeError):
    """The lab could not be built or a command in it failed; the message says what and why."""


# --- preflight -----------------------------------------------------------------------------------


def preflight() -> None:
    """Raise :class:`LabError` naming what is missing to build a lab (root, commands, namespaces)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("root (network namespaces need CAP_NET_ADMIN and CAP_SYS_ADMIN; running as uid "
                        f"{os.geteuid()})")
    missing = {cmd: pkg for cmd, pkg in REQUIRED_COMMANDS.items() if shutil.which(cmd) is None}
    if missing:
        pkgs = " ".join(sorted(set(missing.values())))
        problems.append(f"commands {', '.join(missing)} (apt-get install {pkgs})")
    if problems:
        raise LabError("the network lab needs " + "; ".join(problems))


# --- stale labs ------------------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _root_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    return [m.group(1) for m in re.finditer(r"^\d+: ([^:@\s]+)[@:]", out, re.M)]


def _delete_lab_objects(tag: str) -> None:
    """Delete every namespace and root link of lab ``tag`` (killing what runs in them)."""
    for ns in [n for n in _netns_list() if n.startswith(f"{NS_PREFIX}{tag}-")]:
        _kill_ns_processes(ns)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    for link in [link for link in _root_links() if link.startswith(f"{LINK_PREFIX}{tag}")]:
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)


def _kill_ns_processes(ns: str) -> None:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout
    for pid in (int(p) for p in out.split() if p.isdigit()):
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _reap_stale_labs() -> list[str]:
    """Delete labs whose owner process is gone; return their tags. Call with the state lock held."""
    reaped = []
    for f in STATE_DIR.glob("*.owner"):
        try:
            pid_s, _, started = f.read_text().partition(" ")
            alive = _start_time(int(pid_s)) == started.strip()
        except (OSError, ValueError):
            alive = False
        if not alive:
            _delete_lab_objects(f.stem)
            shutil.rmtree(Path(tempfile.gettempdir()) / f"{NS_PREFIX}{f.stem}", ignore_errors=True)  # default workdir
            f.unlink(missing_ok=True)
            reaped.append(f.stem)
    return reaped


# --- the lab -------------------------------------------------------------------------------------


class Lab:
    """Host namespaces, a router namespace and a management bridge; see the module docstring.

    ``Lab(workdir=None, rps=True)``; ``start()`` (or ``with Lab() as lab``) builds it,
    ``close()`` removes it. Host names are instance ids (``"subnet-1c/0"``).
    """

    #: seconds a command in the lab may take unless the caller says otherwise
    timeout = 120.0

    def __init__(self, workdir: Path | None = None, *, rps: bool = True) -> None:
        self.tag = secrets.token_hex(_TAG_HEX // 2)
        self.prefix = f"{NS_PREFIX}{self.tag}"
        self.rps = rps
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.gettempdir()) / self.prefix  # made by start()
        self.hosts: tuple[str, ...] = tuple(INSTANCES)
        self.mgmt_ip = ""
        self.mgmt_net: ipaddress.IPv4Network | None = None
        self.build_s: float | None = None
        self.teardown_s: float | None = None
        self._procs: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()
        self._next_port = 5201
        self._http: dict[str, str] = {}  # host -> URL of its last http_server
        self._host_loss: dict[str, float] = {}
        self._path_loss: dict[tuple[str, str], float] = {}
        self._started = False
        self._closed = False

    # --- names ------------------------------------------------------------------------------
    @staticmethod
    def short(host: str) -> str:
        """Short name of an instance id, used in namespace and device names (``subnet-1a/0`` -> ``1a-0``)."""
        subnet, _, n = host.partition("/")
        return f"{subnet.removeprefix('subnet-')}-{n}"

    def netns(self, host: str) -> str:
        """Name of the network namespace of ``host`` (an instance id, or ``"router"``)."""
        if host == "router":
            return f"{self.prefix}-{_ROUTER}"
        self._check_host(host)
        return f"{self.prefix}-{self.short(host)}"

    def ip(self, host: str) -> str:
        """Data-network address of ``host``."""
        self._check_host(host)
        return INSTANCES[host]

    def mgmt_addr(self, host: str) -> str:
        """Management-network address of ``host`` (its ``mgmt0``)."""
        assert self.mgmt_net is not None, "the lab is not started"
        return str(self.mgmt_net[10 + self.hosts.index(host)])

    def subnet_of(self, host: str) -> SubnetSpec:
        self._check_host(host)
        return next(s for s in SUBNETS if host.startswith(s.id + "/"))

    def _check_host(self, host: str) -> None:
        if host not in INSTANCES:
            raise LabError(f"no host {host!r} in the lab; hosts are {', '.join(INSTANCES)}")

    def _port_dev(self, host: str) -> str:
        return f"p{self.short(host)}"  # router side of the host's data link

    def _mgmt_dev(self, host: str) -> str:
        return f"{LINK_PREFIX}{self.tag}m{self.hosts.index(host)}"

    @property
    def _bridge(self) -> str:
        return f"{LINK_PREFIX}{self.tag}br"

    @staticmethod
    def _subnet_bridge(s: SubnetSpec) -> str:
        return f"br{s.id.removeprefix('subnet-')}"

    # --- build / teardown --------------------------------------------------------------------
    def start(self) -> Self:
        """Build the lab; raise :class:`LabError` (after removing what was made) if that fails."""
        if self._started:
            return self
        preflight()
        t0 = time.monotonic()
        self._started = True
        self.workdir.mkdir(parents=True, exist_ok=not self._own_workdir)
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        self.build_s = time.monotonic() - t0
        return self

    def _build(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        with open(STATE_DIR / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _reap_stale_labs()
            (STATE_DIR / f"{self.tag}.owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}")
            try:
                self._sh(["ip", "netns", "add", self.netns("router")])
            except LabError as e:
                raise LabError(f"cannot create a network namespace (a container without CAP_SYS_ADMIN?): {e}") from None
            self.mgmt_net = self._free_mgmt_net()
            self.mgmt_ip = str(self.mgmt_net[1])
            self._sh(["ip", "link", "add", self._bridge, "type", "bridge"])
            self._sh(["ip", "addr", "add", f"{self.mgmt_ip}/{self.mgmt_net.prefixlen}", "dev", self._bridge])
            self._sh(["ip", "link", "set", self._bridge, "up"])
        for h in self.hosts:
            self._sh(["ip", "netns", "add", self.netns(h)])
        router = self.netns("router")
        self._sysctls(router, {"net.ipv4.ip_forward": "1"})
        rb = ["link set lo up"]
        for s in SUBNETS:
            net = ipaddress.ip_network(s.cidr)
            br = self._subnet_bridge(s)
            rb += [f"link add {br} type bridge", f"addr add {net[1]}/{net.prefixlen} dev {br}", f"link set {br} up"]
        for h in self.hosts:
            s = self.subnet_of(h)
            # the pair is made in the router namespace, its peer goes straight into the host's
            rb += [
                f"link add {self._port_dev(h)} type veth peer name eth0 netns {self.netns(h)}",
                f"link set {self._port_dev(h)} master {self._subnet_bridge(s)}",
                f"link set {self._port_dev(h)} up",
            ]
        self._ip_batch(router, rb)
        for h in self.hosts:
            ns = self.netns(h)
            net = ipaddress.ip_network(self.subnet_of(h).cidr)
            self._sh(["ip", "link", "add", self._mgmt_dev(h), "type", "veth", "peer", "name", "mgmt0", "netns", ns])
            self._sh(["ip", "link", "set", self._mgmt_dev(h), "master", self._bridge, "up"])
            self._ip_batch(ns, [
                "link set lo up",
                f"addr add {self.ip(h)}/{net.prefixlen} dev eth0",
                "link set eth0 up",
                f"addr add {self.mgmt_addr(h)}/{self.mgmt_net.prefixlen} dev mgmt0",  # type: ignore[union-attr]
                "link set mgmt0 up",
                f"route add default via {net[1]} dev eth0",
            ])  # fmt: skip
            self._sysctls(ns, {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"})
        self._tune_router_and_devices()

    def _tune_router_and_devices(self) -> None:
        router = self.netns("router")
        # bridged frames must not pass the IP hooks (br_netfilter is loaded where docker runs)
        self._sysctls(router, {
            "net.ipv6.conf.all.disable_ipv6": "1",
            "net.ipv6.conf.default.disable_ipv6": "1",
        }, optional={
            "net.bridge.bridge-nf-call-iptables": "0",
            "net.bridge.bridge-nf-call-ip6tables": "0",
            "net.bridge.bridge-nf-call-arptables": "0",
        })  # fmt: skip
        data_devs = [(router, self._port_dev(h)) for h in self.hosts] + [(self.netns(h), "eth0") for h in self.hosts]
        data_devs += [(router, self._subnet_bridge(s)) for s in SUBNETS]
        for ns, dev in data_devs:
            self._sh(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "gso", "off", "tso", "off", "gro", "off"])
        if self.rps:
            mask = format((1 << (os.cpu_count() or 1)) - 1, "x")
            for ns in [router, *(self.netns(h) for h in self.hosts)]:
                devs = [d for n, d in data_devs if n == ns and not d.startswith("br")]
                script = "; ".join(f"echo {mask} > /sys/class/net/{d}/queues/rx-0/rps_cpus" for d in devs)
                self._sh(["ip", "netns", "exec", ns, "sh", "-ec", script])

    def _free_mgmt_net(self) -> ipaddress.IPv4Network:
        out = self._sh(["ip", "-4", "-o", "addr", "show"]).stdout
        out += self._sh(["ip", "-4", "route", "show", "table", "all"]).stdout
        used = [ipaddress.ip_network(m.group(1), strict=False) for m in re.finditer(r"(\d+\.\d+\.\d+\.\d+(?:/\d+)?)", out)]
        for net in ipaddress.ip_network(MGMT_SUPERNET).subnets(new_prefix=24):
            if net.network_address.packed[2] == 0:
                continue
            if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
                return net
        raise LabError(f"no free /24 left in {MGMT_SUPERNET} for the lab's management bridge")

    def close(self) -> None:
        """Kill what runs in the lab, delete its namespaces, links and files. Idempotent."""
        if self._closed or not self._started:
            self._closed = True
            return
        self._closed = True
        atexit.unregister(self.close)
        t0 = time.monotonic()
        for p in self._procs:
            if p.poll() is None:
                p.kill()
        for p in self._procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        _delete_lab_objects(self.tag)
        (STATE_DIR / f"{self.tag}.owner").unlink(missing_ok=True)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.teardown_s = time.monotonic() - t0

    def leftovers(self) -> list[str]:
        """Namespaces and root links of this lab that still exist (empty after ``close()``)."""
        return [n for n in _netns_list() if n.startswith(self.prefix + "-")] + [
            link for link in _root_links() if link.startswith(f"{LINK_PREFIX}{self.tag}")
        ]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._started else "new"
        return f"<Lab {self.prefix} {state} mgmt={self.mgmt_ip or '-'}>"

    # --- commands ----------------------------------------------------------------------------
    def _sh(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        try:
            cp = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout or self.timeout)
        except FileNotFoundError:
            raise LabError(f"command not found: {argv[0]}") from None
        except subprocess.TimeoutExpired:
            raise LabError(f"timed out after {timeout or self.timeout:.0f} s: {' '.join(argv)}") from None
        if cp.returncode != 0:
            raise LabError(f"{' '.join(argv)} exited with {cp.returncode}: {(cp.stderr or cp.stdout).strip()[-800:]}")
        return cp

    def _ip_batch(self, ns: str, lines: Iterable[str]) -> None:
        self._sh(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")

    def _sysctls(self, ns: str, values: dict[str, str], optional: dict[str, str] | None = None) -> None:
        args = [f"{k}={v}" for k, v in values.items()]
        self._sh(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *args])
        for k, v in (optional or {}).items():
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{k}={v}"], capture_output=True, check=False)

    def _in(self, host: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns(host), *map(str, argv)]

    def run(self, host: str, argv: Sequence[str | int], *, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` in the namespace of ``host`` (or ``"router"``) and wait.

        Output is captured as text unless ``kw`` says otherwise. A non-zero exit raises
        :class:`LabError` with the command's stderr (``check=False`` returns it instead).
        """
        kw.setdefault("timeout", self.timeout)
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        cmd = self._in(host, argv)
        cp = subprocess.run(cmd, **kw)
        if check and cp.returncode != 0:
            err = cp.stderr if isinstance(cp.stderr, str) else (cp.stderr or b"").decode(errors="replace")
            raise LabError(f"on {host}: {' '.join(map(str, argv))} exited with {cp.returncode}: {err.strip()[-800:]}")
        return cp

    def popen(self, host: str, argv: Sequence[str | int], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in the namespace of ``host``; ``close()`` kills it (and it dies with us)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        kw.setdefault("preexec_fn", die_with_parent())
        p = subprocess.Popen(self._in(host, argv), **kw)
        with self._lock:
            self._procs.append(p)
        return p

    def port(self) -> int:
        """A TCP port no other server started by this lab uses (5201, 5202, ...)."""
        with self._lock:
            self._next_port += 1
            return self._next_port - 1

    def wait_listening(self, host: str, port: int, timeout: float = 10.0, proc: subprocess.Popen[Any] | None = None) -> None:
        """Wait until something listens on TCP ``port`` in ``host``'s namespace."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise LabError(f"on {host}: {' '.join(map(str, proc.args))} exited with {proc.returncode} before listening")
            out = self.run(host, ["ss", "-Hltn", f"sport = :{port}"]).stdout
            if out.strip():
                return
            time.sleep(0.02)
        raise LabError(f"nothing listens on {host} port {port} after {timeout:.0f} s")

    def tcp_retransmissions(self, host: str) -> int:
        """The kernel's count of TCP segments retransmitted in ``host``'s namespace so far
        (``RetransSegs`` of its ``/proc/net/snmp``: every socket, closed ones too). The same counter
        each socket's ``tcpi_total_retrans`` adds to, so it is the reference for what an agent reports."""
        lines = [ln.split() for ln in self.run(host, ["cat", "/proc/net/snmp"]).stdout.splitlines() if ln.startswith("Tcp:")]
        if len(lines) != 2:
            raise LabError(f"on {host}: /proc/net/snmp has no Tcp: header and values")
        return int(dict(zip(lines[0][1:], lines[1][1:]))["RetransSegs"])

    # --- impairments -------------------------------------------------------------------------
    def host_loss(self, host: str, percent: float) -> None:
        """Drop ``percent`` % of IPv4 packets to and from ``host`` on its link (router side). 0 removes it."""
        self._check_host(host)
        self._host_loss[host] = percent
        self._apply_loss()

    def path_loss(self, a: str, b: str, percent: float) -> None:
        """Drop ``percent`` % of routed packets between subnets (or AZs) ``a`` and ``b``, both ways.

        Only a↔b: traffic inside a subnet and to other subnets is untouched. 0 removes it.
        """
        key = tuple(sorted((self._subnet(a).id, self._subnet(b).id)))
        if key[0] == key[1]:
            raise LabError(f"path_loss needs two different subnets, got {a!r} and {b!r}")
        self._path_loss[key] = percent  # type: ignore[index]
        self._apply_loss()

    def clear_loss(self) -> None:
        """Remove all loss rules."""
        self._host_loss.clear()
        self._path_loss.clear()
        self._apply_loss()

    def _subnet(self, name: str) -> SubnetSpec:
        for s in SUBNETS:
            if name in (s.id, s.az):
                return s
        raise LabError(f"no subnet or AZ {name!r} in the lab; subnets are {', '.join(s.id for s in SUBNETS)}")

    @staticmethod
    def _drop(percent: float, label: str) -> str:
        if not 0 <= percent <= 100:
            raise LabError(f"loss must be between 0 and 100 %, got {percent}")
        return f'numgen random mod 10000 < {round(percent * 100)} counter drop comment "{label}"'

    def _apply_loss(self) -> None:
        rules = ["flush ruleset"]
        hosts = {h: p for h, p in self._host_loss.items() if p > 0}
        if hosts:
            pre = [f'meta protocol ip iifname "{self._port_dev(h)}" {self._drop(p, f"host {h} out")}' for h, p in hosts.items()]
            post = [f'meta protocol ip oifname "{self._port_dev(h)}" {self._drop(p, f"host {h} in")}' for h, p in hosts.items()]
            rules += [
                "table bridge host_loss {",
                "  chain from_host { type filter hook prerouting priority 0; policy accept;", *pre, "  }",
                "  chain to_host { type filter hook postrouting priority 0; policy accept;", *post, "  }",
                "}",
            ]
        paths = {k: p for k, p in self._path_loss.items() if p > 0}
        if paths:
            fwd = []
            for (a, b), p in paths.items():
                ca, cb = self._subnet(a).cidr, self._subnet(b).cidr
                fwd += [
                    f"ip saddr {ca} ip daddr {cb} {self._drop(p, f'path {a} -> {b}')}",
                    f"ip saddr {cb} ip daddr {ca} {self._drop(p, f'path {b} -> {a}')}",
                ]
            rules += ["table ip path_loss {", "  chain lossy_paths { type filter hook forward priority 0; policy accept;", *fwd, "  }", "}"]
        self._sh(["ip", "netns", "exec", self.netns("router"), "nft", "-f", "-"], input="\n".join(rules) + "\n")

    def loss_counters(self) -> dict[str, int]:
        """Packets dropped so far by each loss rule: ``{"host subnet-1c/0 out": n, "path subnet-1a -> subnet-1c": n, ...}``.

        ``out``/``in`` are seen from the host (packets it sent / packets sent to it).
        """
        out = self.run("router", ["nft", "-j", "list", "ruleset"]).stdout
        counts: dict[str, int] = {}
        for item in json.loads(out)["nftables"]:
            rule = item.get("rule")
            if rule and "comment" in rule:
                packets = next((e["counter"]["packets"] for e in rule["expr"] if "counter" in e), 0)
                counts[rule["comment"]] = packets
        return counts

    def inter_az_delay(self, rate: str = "20mbit", queue_ms: int = 200) -> None:
        """Shape routed (inter-subnet, so inter-AZ) traffic: a ``tbf`` of ``rate`` with a ``queue_ms`` queue.

        The queue delays packets only while it is full: load the path while measuring.
        """
        for s in SUBNETS:
            self.run("router", ["tc", "qdisc", "replace", "dev", self._subnet_bridge(s), "root",
                                "tbf", "rate", rate, "burst", "32kb", "latency", f"{queue_ms}ms"])  # fmt: skip

    def clear_delay(self) -> None:
        """Remove the shaping of :meth:`inter_az_delay`."""
        for s in SUBNETS:
            self.run("router", ["tc", "qdisc", "del", "dev", self._subnet_bridge(s), "root"], check=False)

    # --- traffic -------------------------------------------------------------------------------
    def iperf3(
        self,
        client: str,
        server: str,
        seconds: float = 5,
        bitrate: str = "200M",
        congestion: str = "cubic",
        port: int | None = None,
        extra: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Run iperf3 from ``client`` to ``server`` (a one-off ``iperf3 -s -1``) and return its ``-J`` JSON.

        Thread-safe: several at once (each on its own port) from threads.
        ``result["end"]["sum_sent"]["retransmits"]`` counts the sender's retransmissions.
        """
        port = port or self.port()
        srv = self.popen(server, ["iperf3", "-s", "-1", "-B", self.ip(server), "-p", port],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        try:
            self.wait_listening(server, port, proc=srv)
            cp = self.run(
                client,
                ["iperf3", "-c", self.ip(server), "-p", port, "-t", seconds, "-b", bitrate, "-C", congestion, "-J", *extra],
                check=False,
                timeout=seconds + 60,
            )
            try:
                result: dict[str, Any] = json.loads(cp.stdout)
            except json.JSONDecodeError:
                raise LabError(f"iperf3 {client} -> {server}: no JSON (exit {cp.returncode}): {cp.stderr.strip()[-500:]}") from None
            if "error" in result or cp.returncode != 0:
                raise LabError(f"iperf3 {client} -> {server} failed: {result.get('error', cp.stderr.strip())}")
            srv.wait(10)
            return result
        finally:
            if srv.poll() is None:
                srv.kill()
                srv.wait()
            if srv.stderr:
                srv.stderr.close()

    def iperf3_many(self, pairs: Iterable[tuple[str, str]], seconds: float = 5, **kw: Any) -> list[dict[str, Any]]:
        """Run one :meth:`iperf3` per ``(client, server)`` pair, all at once; results in the same order."""
        pairs = list(pairs)
        with ThreadPoolExecutor(max_workers=max(len(pairs), 1)) as ex:
            futures = [ex.submit(self.iperf3, c, s, seconds, **kw) for c, s in pairs]
            return [f.result() for f in futures]

    def http_server(self, host: str, size_bytes: int, port: int | None = None) -> str:
        """Serve one file of ``size_bytes`` (random bytes) from ``host`` (python http.server); return its URL.

        :meth:`fetch` gets the file of the last server started on ``host``.
        """
        port = port or self.port()
        d = self.workdir / f"http-{self.short(host)}-{port}"
        d.mkdir(parents=True, exist_ok=True)
        name = f"blob-{size_bytes}.bin"
        with open(d / name, "wb") as f:
            chunk = os.urandom(1 << 20)
            left = size_bytes
            while left > 0:
                f.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
        p = self.popen(host, [sys.executable, "-m", "http.server", port, "--bind", self.ip(host), "--directory", d],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        self.wait_listening(host, port, proc=p)
        url = f"http://{self.ip(host)}:{port}/{name}"
        self._http[host] = url
        return url

    def fetch(self, client: str, server: str, times: int = 1) -> int:
        """GET the file of ``server``'s :meth:`http_server` ``times`` times (curl, one connection each); bytes received."""
        url = self._http.get(server)
        if url is None:
            raise LabError(f"no http_server on {server}: call lab.http_server({server!r}, size) first")
        total = 0
        for _ in range(times):
            cp = self.run(client, ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}", url])
            total += int(float(cp.stdout.strip()))
        return total

    def ping(self, src: str, dst: str, count: int = 5, interval: float = 0.2) -> float:
        """Average round-trip time in ms of ``count`` pings from ``src`` to ``dst``'s data address."""
        cp = self.run(src, ["ping", "-n", "-q", "-c", count, "-i", interval, "-W", "3", self.ip(dst)], check=False)
        m = re.search(r"= [\d.]+/([\d.]+)/", cp.stdout)
        if not m:
            raise LabError(f"ping {src} -> {dst}: no replies ({cp.stdout.strip().splitlines()[-2:]} {cp.stderr.strip()})")
        return float(m.group(1))

    # --- topology ------------------------------------------------------------------------------
    def topology(self) -> dict[str, Any]:
        """The lab as a flowmon topology mapping (region → VPC → AZs → subnets)."""
        return {
            "region": REGION,
            "vpcs": [{
                "id": VPC,
                "azs": [{"id": s.az, "subnets": [{"id": s.id, "cidr": s.cidr, "instances": s.instances}]} for s in SUBNETS],
            }],
        }  # fmt: skip

    def topology_yaml(self, path: Path | str) -> Path:
        """Write :meth:`topology` as a YAML topology file; return its path."""
        import yaml

        path = Path(path)
        path.write_text("# flowmon network lab (tests/support/netns.py)\n" + yaml.safe_dump(self.topology(), sort_keys=False))
        return path
