"""Facts about each host, read before anything changes (preflight): engine, swarm membership, kernel, ports.

Everything here only reads. Results are per host; a host that fails is a value, not an exception.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from swarmctl.errors import EngineError, HostError, Unreachable
from swarmctl.facts.engine_config import READ_SCRIPT, EngineFacts, engine_facts, parse_config_read
from swarmctl.facts.membership import Membership, parse_membership
from swarmctl.inventory import Host
from swarmctl.transport.engine import MIN_ENGINE, Engine, Session, missing_cli_message, parse_engine_version
from swarmctl.transport.ssh import Outcome, Started

SWARM_PORT = 2377  # manager API, tcp
GOSSIP_PORT = 7946  # node gossip, tcp + udp
VXLAN_PORT = 4789  # overlay data, udp

# One round trip per host: which tools exist and what the kernel can do. Kernel features are read
# from the running kernel first (/proc, /sys/module), then from whether a module could be loaded,
# then from the kernel config (read only then); "unknown" when none of those tells. Few programs
# are started: every host of a first bootstrap runs this at once, on CPUs its engines share.
_FACTS_SCRIPT = r"""
has() { command -v "$1" >/dev/null 2>&1; }
{ read -r kernel < /proc/sys/kernel/osrelease; } 2>/dev/null || kernel=$(uname -r)
kconfig="" kread=""
kernel_config() {
  [ -n "$kread" ] && return 0
  kread=1
  if [ -r /proc/config.gz ] && has gzip; then kconfig=$(gzip -dc /proc/config.gz 2>/dev/null)
  elif [ -r /proc/config.gz ] && has zcat; then kconfig=$(zcat /proc/config.gz 2>/dev/null)
  elif [ -r "/boot/config-$kernel" ]; then kconfig=$(cat "/boot/config-$kernel"); fi
}
feature() { # name, module, CONFIG_ symbol, optional /proc path that proves it is there
  if { [ -n "${4:-}" ] && [ -e "$4" ]; } || [ -d "/sys/module/$2" ]; then echo "$1=yes"; return; fi
  if has modinfo && modinfo "$2" >/dev/null 2>&1; then echo "$1=yes"; return; fi
  kernel_config
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
echo "kernel=$kernel"
feature ipvs ip_vs CONFIG_IP_VS /proc/net/ip_vs
feature esp esp4 CONFIG_INET_ESP
# the host's own addresses (`ip -o`: the fourth field, ADDRESS/PREFIX): the one the swarm will
# advertise must be among them
if has ip; then
  ip -o addr show 2>/dev/null | { a=""; while read -r _ _ _ addr _; do a="$a${addr%%/*} "; done; echo "addrs=$a"; }
elif has hostname; then echo "addrs=$(hostname -I 2>/dev/null)"; fi
"""

# Tests TCP reachability from the host itself; arguments are ADDRESS PORT pairs (never interpolated).
# A refused connection proves the path is open (the peer answered); only silence is a failure.
# First every target in turn, in one shell: no process per probe, and a refused or accepted connect
# answers at once (the script for 26 targets, bash's start included: 7 ms of CPU, against 23 ms
# with a forked shell per probe, which a bootstrap of 24 hosts makes ~600 of). A target silent for
# 1 s (or 2-3 s of this pass in all: bash counts whole seconds) ends the pass; the targets it left
# are then probed all at once, a forked shell each (bash's /dev/tcp, no program started), those
# still connecting after 3 s killed: timeout. A silent target costs about 4 s; the worst case (slow
# answers beside it) about 7 s.
_PORTS_SCRIPT = r"""
export LC_ALL=C  # connect errors in English, whatever locale the SSH session brought
exec 2>/dev/null  # the results are on stdout
declare -A seen=()
say() {  # a probe's line ("A P open", or bash's "...: /dev/tcp/A/P: why") -> "A P verdict", once
  local a p rest v
  case "$1" in
    *" open") a=${1%% *}; rest=${1#* }; p=${rest%% *}; v=open ;;
    */dev/tcp/*/*:*) rest=${1#*/dev/tcp/}; a=${rest%%/*}; rest=${rest#*/}; p=${rest%%:*}
      case "$rest" in *refused*) v=refused ;; *"No route"*|*nreachable*) v=unreachable ;; *) v=error ;; esac ;;
    *) return 0 ;;
  esac
  [ -n "${seen["$a $p"]}" ] && return 0
  seen["$a $p"]=1
  echo "$a $p $v"
}
probe() {  # one connect, in the shell that calls it: "A P open", or bash's error lines
  { true 3<>"/dev/tcp/$1/$2" && echo "$1 $2 open"; } 2>&1
}
in_turn() {
  echo "$BASHPID"
  while [ $# -ge 2 ]; do probe "$1" "$2"; shift 2; done
  echo .
}
at_once() {
  local pids=() watchdog
  while [ $# -ge 2 ]; do probe "$1" "$2" & pids+=("$!"); shift 2; done
  ( sleep 3; kill "${pids[@]}" ) >/dev/null 2>&1 &
  watchdog=$!
  wait "${pids[@]}"
  kill "$watchdog"
  echo .
}
collect() {  # fd 4's lines until its end ("."), or none for $1 s, or $2 s in all; 0: the end came
  local line start=$SECONDS
  while [ $((SECONDS - start)) -lt "$2" ] && IFS= read -r -t "$1" line <&4; do
    [ "$line" = . ] && return 0
    say "$line"
  done
  return 1
}
exec 4< <(in_turn "$@")
IFS= read -r -t 3 lane <&4
collect 1 3 && exit 0
[ -n "$lane" ] && kill "$lane"
exec 4<&-  # and a lane not killed dies at its next line
left=()
while [ $# -ge 2 ]; do [ -n "${seen["$1 $2"]}" ] || left+=("$1" "$2"); shift 2; done
[ ${#left[@]} -eq 0 ] && exit 0
exec 4< <(at_once "${left[@]}")
collect 4 5
set -- "${left[@]}"
while [ $# -ge 2 ]; do [ -n "${seen["$1 $2"]}" ] || echo "$1 $2 timeout"; shift 2; done
exit 0
"""


def parse_facts_script(output: str) -> dict[str, str]:
    """_FACTS_SCRIPT's output -> its KEY=VALUE lines (pure)."""
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def parse_ports(output: str) -> dict[tuple[str, str], str]:
    """_PORTS_SCRIPT's output -> (address, port) -> open | refused | timeout | unreachable | error (pure)."""
    seen: dict[tuple[str, str], str] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3:
            # the first word counts: a probe that answered just as the watchdog fired says both
            seen.setdefault((parts[0], parts[1]), parts[2])
    return seen


@dataclass(frozen=True)
class HostFacts:
    """What one host told us. ``node_id`` is empty unless the engine is in a swarm."""

    name: str
    engine_version: str
    hostname: str
    membership: Membership
    ipvs: str  # yes | no | unknown
    esp: str
    can_probe_ports: bool
    errors: tuple[str, ...] = field(default=())
    advertise: str = ""  # the IP address the swarm knows (or will know) the host by

    @property
    def swarm_state(self) -> str:
        return self.membership.state

    @property
    def node_id(self) -> str:
        return self.membership.node_id

    @property
    def cluster_id(self) -> str:
        return self.membership.cluster_id

    @property
    def control_available(self) -> bool:
        return self.membership.control_available

    @property
    def in_swarm(self) -> bool:
        return self.membership.active


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


_SEPARATOR = "=== swarmctl: engine configuration ==="


_PROBES_SEPARATOR = "=== swarmctl: swarm ports ==="


@dataclass(frozen=True)
class HostRead:
    """Everything bootstrap reads of one host, in one SSH round trip and one API call: its
    preflight facts and its engine's configuration; and, when it was asked to probe its swarm
    ports in the same round trip (``read_host``'s ``ahead``), what each probe saw ((address,
    port) -> result; None when not asked, or the host has no bash)."""

    facts: HostFacts
    engine: EngineFacts
    probes: Mapping[tuple[str, str], str] | None = None


def read_facts(session: Session, host: Host) -> HostFacts:
    """Engine, swarm and kernel facts of one host (SSH and Docker API, read only).

    Raises:
        HostError: unreachable host, no docker CLI, engine not answering or too old.
    """
    conn = session.pool.connection(host)
    res = conn.run(["sh", "-c", _FACTS_SCRIPT], timeout=30).check("read host facts")
    return _facts(session, host, res.stdout, lambda: engine_info(session.engine(host)))[0]


def read_host(
    session: Session, host: Host, registries: Iterable[str] = (), ahead: Iterable[tuple[str, int]] = ()
) -> HostRead:
    """One host's preflight facts and engine configuration: one command over SSH (both scripts),
    and beside it the engine's info (``engine_info``). ``ahead``: (address, port) targets to probe
    in the same command (``ahead_targets``), when bash is there.

    Raises:
        HostError: unreachable host, no docker CLI, engine not answering or too old, daemon.json
            not a JSON object.
    """
    conn = session.pool.connection(host)
    targets = list(ahead)
    conn.transport()  # connected first: the engine's read and the script then share the connection
    # the engine is read while the script runs (on a first bootstrap the probes take most of it)
    info = Started(lambda: engine_info(session.engine(host)), f"engine info {host.name}")
    res = conn.run(["sh", "-c", read_script(targets), "read", *registries], timeout=30).check("read host facts")
    head, _, tail = res.stdout.partition(_SEPARATOR + "\n")
    probed, ports = "", ""
    if targets:
        before, probed, ports = tail.rpartition(_PROBES_SEPARATOR + "\n")
        tail = before if probed else tail
    facts, read = _facts(session, host, head, info.result)
    try:
        files = parse_config_read(tail)
    except ValueError as e:
        raise HostError(host.name, str(e)) from None
    return HostRead(facts, engine_facts(host.name, files, read), parse_ports(ports) if probed else None)


def read_script(ahead: Iterable[tuple[str, int]] = ()) -> str:
    """read_host's command (``sh -c``, the registries as its arguments): the facts, the engine
    configuration, then - with targets ``ahead`` and bash on the host - the port probes towards
    them; the command's exit status stays the configuration read's."""
    script = f"{{ {_FACTS_SCRIPT}\n}}\necho {shlex.quote(_SEPARATOR)}\n{{ {READ_SCRIPT}\n}}"
    targets = list(ahead)
    if not targets:
        return script
    probe = shlex.join(probe_command(targets))
    return (f"{script}\nrc=$?\nif command -v bash >/dev/null 2>&1; then echo {shlex.quote(_PROBES_SEPARATOR)}; "
            f"{probe}; fi\nexit $rc")  # fmt: skip


def ahead_targets(hosts: Iterable[Host]) -> dict[str, list[tuple[str, int]]] | None:
    """Every swarm port each host would probe towards every other, at the addresses the inventory
    gives (pure): what a first bootstrap probes, asked in the same round trip as each host's read.
    None when a host's address is a DNS name (the address it advertises is known once it is read)."""
    everyone = list(hosts)
    if not all(h.ip_address for h in everyone):
        return None
    addresses = {h.name: str(h.ip_address) for h in everyone}
    return {h.name: [(a, port) for _, a, port in port_targets(h, everyone, addresses)] for h in everyone}


def engine_info(engine: Engine) -> dict[str, Any]:
    """The engine's info, its version checked against MIN_ENGINE, in one API call: info's
    ServerVersion is the version `/version` reports (which costs the engine as much again: both
    run `runc --version` and `docker-init --version`). An engine older than API_VERSION refuses
    every versioned call ("client version 1.41 is too new" since Docker 17.06, "client is newer
    than server" before): when info is refused, the version is read unversioned, for the error to
    say which engine it is.

    Raises:
        HostError: the engine is too old, or does not answer.
    """
    try:
        info = engine.info()
    except Unreachable:
        raise  # not asked again: the transport says so
    except EngineError as refused:
        try:
            version = str(engine.version().get("Version", "0"))
        except EngineError:
            raise refused from None
        if parse_engine_version(version)[:2] >= MIN_ENGINE:
            raise  # not the engine's age: what it said stands
        raise HostError(engine.name, _too_old(version)) from None
    version = str(info.get("ServerVersion", "0"))
    if parse_engine_version(version)[:2] < MIN_ENGINE:
        raise HostError(engine.name, _too_old(version))
    return info


def _too_old(version: str) -> str:
    return f"Docker Engine {version} is too old: swarmctl needs {'.'.join(map(str, MIN_ENGINE))} or newer"


def _facts(
    session: Session, host: Host, output: str, engine: Callable[[], dict[str, Any]]
) -> tuple[HostFacts, dict[str, Any]]:
    """_FACTS_SCRIPT's output and the engine's info (``engine``: engine_info's outcome) -> HostFacts
    (and the info read). A host without the docker CLI is named as such, whatever its engine said."""
    kv = parse_facts_script(output)
    if not kv.get("docker_cli"):
        raise HostError(host.name, missing_cli_message(kv.get("cli_package", ""), bool(kv.get("dockerd"))))
    info = engine()
    advertise = advertise_address(session, host)
    own = kv.get("addrs", "").split()
    if own and advertise not in own:
        raise HostError(host.name, advertise_mismatch(host, advertise, own))
    return (
        HostFacts(
            name=host.name,
            engine_version=str(info.get("ServerVersion", "")),
            hostname=str(info.get("Name", "")),
            membership=parse_membership(info),
            ipvs=kv.get("ipvs", "unknown"),
            esp=kv.get("esp", "unknown"),
            can_probe_ports=bool(kv.get("bash")),
            advertise=advertise,
        ),
        info,
    )


def advertise_address(session: Session, host: Host) -> str:
    """The IP address the swarm knows the host by: its ``advertise_address``, else its ``address``
    when that is an IP address, else the address its SSH connection reached (where ``address``, a
    DNS name, resolved on this machine). The swarm refuses names ("advertise address must be a
    non-zero IP address or network interface")."""
    if host.ip_address:
        return host.ip_address
    peer = session.pool.connection(host).transport().getpeername()
    return str(peer[0]).split("%", 1)[0]


def advertise_mismatch(host: Host, advertise: str, own: list[str]) -> str:
    """Why a host cannot advertise ``advertise`` (not one of its addresses ``own``), and what to do (pure)."""
    where = "its advertise_address" if host.advertise_address else (
        f"its address {host.address}" if host.ip_address else f"{host.address} resolves to it here")  # fmt: skip
    return (
        f"the swarm would know it as {advertise} ({where}), which is not an address of the host "
        f"({', '.join(own[:6])}{', ...' if len(own) > 6 else ''}): a NAT or a proxy is in between; set "
        "`advertise_address` to the host's own address that the other hosts reach"
    )


@dataclass(frozen=True)
class Preflight:
    facts: HostFacts
    probes: tuple[PortProbe, ...]

    def port_failures(self, ignore: Iterable[str] = ()) -> list[PortProbe]:
        """Failed probes, except those to hosts in ``ignore`` (hosts that failed themselves)."""
        skip = set(ignore)
        return [p for p in self.probes if not p.ok and p.target not in skip]


def read_hosts(
    session: Session,
    hosts: Iterable[Host],
    registries: Iterable[str] = (),
    ahead: Mapping[str, list[tuple[str, int]]] | None = None,
) -> dict[str, Outcome[HostRead]]:
    """read_host for every host, in parallel (``ahead``: host -> the targets it probes meanwhile)."""
    names = list(registries)
    targets = ahead or {}
    return session.fan_out(lambda h: read_host(session, h, names, targets.get(h.name, ())), list(hosts))


def probe_peers(hosts: Iterable[Host], members: frozenset[str]) -> dict[str, list[Host]]:
    """Whom each host's swarm ports are probed towards (pure). ``members``: hosts that are Ready
    nodes of the swarm in the role the inventory gives them (bootstrap.ready_members) - probed
    when they joined, and their managers' ports in use by the swarm - so they are probed only
    towards the hosts that are not (a host about to join, or to change its role); those are
    probed towards everyone. When every host is a member, nothing
    is probed: a bootstrap that has nothing to do does not grow with the square of the hosts."""
    everyone = list(hosts)
    newcomers = [h for h in everyone if h.name not in members]
    return {h.name: newcomers if h.name in members else everyone for h in everyone}


def probe_all(
    session: Session,
    hosts: Iterable[Host],
    facts: Mapping[str, HostFacts],
    members: frozenset[str] = frozenset(),
    ahead: Mapping[str, Mapping[tuple[str, str], str]] | None = None,
) -> dict[str, Outcome[Preflight]]:
    """The swarm-port probes from every host that answered (``facts``) to the others' advertise
    addresses (towards the peers probe_peers gives it), in parallel: each host's Preflight. A host
    whose read already probed every one of them (``ahead``: host -> what its probes saw) is
    judged from those, and asked nothing more; the probes it made beyond them are not looked at."""
    everyone = list(hosts)
    addresses = {n: f.advertise for n, f in facts.items()}
    peers = probe_peers(everyone, members)
    seen_ahead = ahead or {}

    def one(host: Host) -> Preflight:
        f = facts[host.name]
        if not f.can_probe_ports:
            return Preflight(f, ())
        targets = port_targets(host, peers[host.name], addresses)
        seen = seen_ahead.get(host.name)
        if seen is None or any((address, str(port)) not in seen for _, address, port in targets):
            return Preflight(f, tuple(probe_ports(session, host, targets)))
        return Preflight(f, tuple(probe_results(host, targets, seen)))

    return session.fan_out(one, [h for h in everyone if h.name in facts])


def port_targets(host: Host, peers: Iterable[Host], addresses: Mapping[str, str]) -> list[tuple[Host, str, int]]:
    """What ``host`` must reach: 2377/tcp on every manager, 7946/tcp on every other host, at the
    address each advertises (``addresses``; peers without one are left out: they failed themselves) (pure)."""
    out = []
    for peer in peers:
        if peer.name == host.name or peer.name not in addresses:
            continue
        if peer.is_manager:
            out.append((peer, addresses[peer.name], SWARM_PORT))
        out.append((peer, addresses[peer.name], GOSSIP_PORT))
    return out


def probe_ports(session: Session, host: Host, targets: list[tuple[Host, str, int]]) -> list[PortProbe]:
    """Try the swarm ports ``targets`` (``port_targets``) from ``host`` itself, in parallel on the host."""
    if not targets:
        return []
    command = probe_command([(address, port) for _, address, port in targets])
    res = session.pool.connection(host).run(command, timeout=30)
    res.check("probe swarm ports")
    return probe_results(host, targets, parse_ports(res.stdout))


def probe_command(targets: Iterable[tuple[str, int]]) -> list[str]:
    """_PORTS_SCRIPT's argv, probing each (address, port) of ``targets`` (pure)."""
    return ["bash", "-c", _PORTS_SCRIPT, "probe", *(str(x) for address, port in targets for x in (address, port))]


def probe_results(
    host: Host, targets: list[tuple[Host, str, int]], seen: Mapping[tuple[str, str], str]
) -> list[PortProbe]:
    """Each target's probe, as _PORTS_SCRIPT's output (``parse_ports``) says it went (pure)."""
    return [
        PortProbe(host.name, peer.name, address, port, seen.get((address, str(port)), "error"))
        for peer, address, port in targets
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
