"""Facts about each host, read before anything changes (preflight): engine, swarm membership, kernel, ports.

Everything here only reads. Results are per host; a host that fails is a value, not an exception.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from swarmctl.errors import HostError
from swarmctl.inventory import Host
from swarmctl.transport.engine import MIN_ENGINE, Session, missing_cli_message, parse_engine_version
from swarmctl.transport.ssh import Outcome

SWARM_PORT = 2377  # manager API, tcp
GOSSIP_PORT = 7946  # node gossip, tcp + udp
VXLAN_PORT = 4789  # overlay data, udp

# One round trip per host: which tools exist and what the kernel can do. Kernel features are read
# from the running kernel first (/proc, /sys/module), then from whether a module could be loaded,
# then from the kernel config; "unknown" when none of those tells.
_FACTS_SCRIPT = r"""
has() { command -v "$1" >/dev/null 2>&1; }
if [ -r /proc/config.gz ] && has zcat; then kconfig=$(zcat /proc/config.gz 2>/dev/null)
elif [ -r "/boot/config-$(uname -r)" ]; then kconfig=$(cat "/boot/config-$(uname -r)")
else kconfig=""; fi
feature() { # name, module, CONFIG_ symbol, optional /proc path that proves it is there
  if { [ -n "${4:-}" ] && [ -e "$4" ]; } || [ -d "/sys/module/$2" ]; then echo "$1=yes"; return; fi
  if has modinfo && modinfo "$2" >/dev/null 2>&1; then echo "$1=yes"; return; fi
  case "$kconfig" in
    *"$3=y"*|*"$3=m"*) echo "$1=yes" ;;
    *"# $3 is not set"*) echo "$1=no" ;;
    *) if [ -n "$kconfig" ]; then echo "$1=no"; else echo "$1=unknown"; fi ;;
  esac
}
cli=$(command -v docker 2>/dev/null || true)
if [ -n "$cli" ] && [ ! -x "$cli" ]; then cli=""; fi
echo "docker_cli=$cli"
echo "dockerd=$(command -v dockerd 2>/dev/null || true)"
if [ -z "$cli" ]; then
  # which package gives the CLI here: Docker's own packages, or a distribution that splits it out
  if dpkg-query -W -f='${Status}' docker-ce 2>/dev/null | grep -q 'ok installed'; then echo "cli_package=docker-ce-cli"
  elif has apt-cache && apt-cache show docker-cli >/dev/null 2>&1; then echo "cli_package=docker-cli"
  elif has rpm && rpm -q docker-ce >/dev/null 2>&1; then echo "cli_package=docker-ce-cli"
  fi
fi
echo "bash=$(command -v bash || true)"
echo "timeout=$(command -v timeout || true)"
echo "kernel=$(uname -r)"
feature ipvs ip_vs CONFIG_IP_VS /proc/net/ip_vs
feature esp esp4 CONFIG_INET_ESP
"""

# Tests TCP reachability from the host itself; arguments are ADDRESS PORT pairs (never interpolated).
# A refused connection proves the path is open (the peer answered); only silence is a failure.
_PORTS_SCRIPT = r"""
probe() {
  out=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>&1); rc=$?
  if [ "$rc" = 0 ]; then r=open
  elif [ "$rc" = 124 ]; then r=timeout
  else case "$out" in
    *refused*) r=refused ;;
    *"No route"*|*unreachable*) r=unreachable ;;
    *) r=error ;;
  esac; fi
  echo "$1 $2 $r"
}
while [ $# -ge 2 ]; do probe "$1" "$2" & shift 2; done
wait
"""


@dataclass(frozen=True)
class HostFacts:
    """What one host told us. ``node_id`` is empty unless the engine is in a swarm."""

    name: str
    engine_version: str
    api_version: str
    hostname: str
    swarm_state: str  # inactive | pending | active | error | locked
    node_id: str
    cluster_id: str  # only managers know it
    control_available: bool
    ipvs: str  # yes | no | unknown
    esp: str
    can_probe_ports: bool
    errors: tuple[str, ...] = field(default=())

    @property
    def in_swarm(self) -> bool:
        return self.swarm_state == "active"


@dataclass(frozen=True)
class PortProbe:
    source: str
    target: str
    address: str
    port: int
    result: str  # open | refused | timeout | unreachable | error

    @property
    def ok(self) -> bool:
        return self.result in ("open", "refused")


def read_facts(session: Session, host: Host) -> HostFacts:
    """Engine, swarm and kernel facts of one host (SSH and Docker API, read only).

    Raises:
        HostError: unreachable host, no docker CLI, engine not answering or too old.
    """
    conn = session.pool.connection(host)
    res = conn.run(["sh", "-c", _FACTS_SCRIPT], timeout=30).check("read host facts")
    kv = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    if not kv.get("docker_cli"):
        raise HostError(host.name, missing_cli_message(kv.get("cli_package", ""), bool(kv.get("dockerd"))))
    engine = session.engine(host)
    version = engine.version()
    engine_version = str(version.get("Version", "0"))
    if parse_engine_version(engine_version)[:2] < MIN_ENGINE:
        need = ".".join(map(str, MIN_ENGINE))
        raise HostError(host.name, f"Docker Engine {engine_version} is too old: swarmctl needs {need} or newer")
    info = engine.info()
    swarm = info.get("Swarm") or {}
    cluster = swarm.get("Cluster") or {}
    return HostFacts(
        name=host.name,
        engine_version=engine_version,
        api_version=str(version.get("ApiVersion", "")),
        hostname=str(info.get("Name", "")),
        swarm_state=str(swarm.get("LocalNodeState") or "inactive"),
        node_id=str(swarm.get("NodeID") or ""),
        cluster_id=str(cluster.get("ID") or ""),
        control_available=bool(swarm.get("ControlAvailable")),
        ipvs=kv.get("ipvs", "unknown"),
        esp=kv.get("esp", "unknown"),
        can_probe_ports=bool(kv.get("bash") and kv.get("timeout")),
    )


@dataclass(frozen=True)
class Preflight:
    facts: HostFacts
    probes: tuple[PortProbe, ...]

    def port_failures(self, ignore: Iterable[str] = ()) -> list[PortProbe]:
        """Failed probes, except those to hosts in ``ignore`` (hosts that failed themselves)."""
        skip = set(ignore)
        return [p for p in self.probes if not p.ok and p.target not in skip]


def preflight(session: Session, hosts: Iterable[Host]) -> dict[str, Outcome[Preflight]]:
    """Facts and swarm-port probes of every host, in parallel, each host in one pass."""
    everyone = list(hosts)

    def one(host: Host) -> Preflight:
        facts = read_facts(session, host)
        probes = probe_ports(session, host, everyone) if facts.can_probe_ports else []
        return Preflight(facts, tuple(probes))

    return session.fan_out(one, everyone)


def port_targets(host: Host, peers: Iterable[Host]) -> list[tuple[Host, int]]:
    """What ``host`` must reach: 2377/tcp on every manager, 7946/tcp on every other host (pure)."""
    out = []
    for peer in peers:
        if peer.name == host.name:
            continue
        if peer.is_manager:
            out.append((peer, SWARM_PORT))
        out.append((peer, GOSSIP_PORT))
    return out


def probe_ports(session: Session, host: Host, peers: list[Host]) -> list[PortProbe]:
    """Try every swarm port ``host`` needs, from ``host`` itself, in parallel on the host."""
    targets = port_targets(host, peers)
    if not targets:
        return []
    args: list[str] = []
    for peer, port in targets:
        args += [peer.address, str(port)]
    res = session.pool.connection(host).run(["bash", "-c", _PORTS_SCRIPT, "probe", *args], timeout=30)
    res.check("probe swarm ports")
    seen = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            seen[(parts[0], parts[1])] = parts[2]
    return [
        PortProbe(host.name, peer.name, peer.address, port, seen.get((peer.address, str(port)), "error"))
        for peer, port in targets
    ]


def port_failure_message(bad: list[PortProbe]) -> str:
    parts = [f"{p.target} ({p.address}) port {p.port}/tcp: {p.result}" for p in bad]
    return (
        "cannot reach "
        + "; ".join(parts)
        + f" - swarm needs {SWARM_PORT}/tcp to managers, {GOSSIP_PORT}/tcp+udp and {VXLAN_PORT}/udp between all hosts"
    )


def kernel_warnings(facts: Iterable[HostFacts]) -> list[str]:
    """IPVS and ESP gaps, one warning per gap naming every host that has it."""
    facts = list(facts)
    warnings = []
    no_ipvs = [f.name for f in facts if f.ipvs == "no"]
    if no_ipvs:
        warnings.append(
            f"{', '.join(no_ipvs)}: kernel has no IPVS (ip_vs): service VIPs will resolve but carry no traffic "
            "and ingress-published ports will not answer; use `endpoint_mode: dnsrr` or `tasks.<service>` names"
        )
    no_esp = [f.name for f in facts if f.esp == "no"]
    if no_esp:
        warnings.append(
            f"{', '.join(no_esp)}: kernel has no IPsec ESP (CONFIG_INET_ESP): overlay networks created with "
            "`--opt encrypted` will carry no traffic"
        )
    unknown = [f.name for f in facts if "unknown" in (f.ipvs, f.esp)]
    if unknown:
        warnings.append(f"{', '.join(unknown)}: could not tell whether the kernel has IPVS and ESP")
    no_probe = [f.name for f in facts if not f.can_probe_ports]
    if no_probe:
        warnings.append(f"{', '.join(no_probe)}: no bash or timeout on the host, swarm ports were not tested")
    return warnings
