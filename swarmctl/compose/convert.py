"""StackConfig -> Docker API objects (pure): network create bodies, secret/config specs, service specs.

The result is what ``docker stack deploy`` (docker/cli's compose/convert package) sends for the
same files, so ``docker stack ls/ps/services/rm`` work on swarmctl stacks and the other way round.
Deliberate additions are labels under ``io.swarmctl.`` only.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmctl import labels as label
from swarmctl import secretstore as secret_files
from swarmctl.compose.loader import StackConfig
from swarmctl.compose.reference import service_image
from swarmctl.errors import InputError
from swarmctl.files import read_regular
from swarmctl.secretstore import KeySource

DEFAULT_NETWORK = "default"


@dataclass(frozen=True)
class FileObject:
    """A secret or config to create: its spec (without Data) and its bytes."""

    name: str
    spec: dict[str, Any]
    data: bytes = field(repr=False)  # secret data: never in a repr, a log or a traceback
    external: bool = False
    digest: str | None = None  # a secret's keyed content digest (None without a secrets key)

    def body(self) -> dict[str, Any]:
        """The API body, data included."""
        return {**self.spec, "Data": base64.b64encode(self.data).decode()}


@dataclass(frozen=True)
class DesiredStack:
    name: str
    networks: dict[str, dict[str, Any]]  # full name -> NetworkCreate body (Name included)
    external_networks: list[str]
    secrets: dict[str, FileObject]  # full name -> object
    configs: dict[str, FileObject]
    services: dict[str, dict[str, Any]]  # full name -> ServiceSpec (secret/config IDs left empty)
    external_secrets: list[str] = field(default_factory=list)
    external_configs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    digest: str = ""  # of the stack files (StackConfig.digest): what a revision records


def scope(stack: str, name: str) -> str:
    return f"{stack}_{name}"


def stack_labels(stack: str, labels: Mapping[str, Any] | None) -> dict[str, str]:
    out = {k: ("" if v is None else str(v)) for k, v in (labels or {}).items()}
    out[label.NAMESPACE] = stack
    return out


def convert_stack(config: StackConfig, keys: KeySource | None = None) -> DesiredStack:
    """Every object the stack needs.

    Args:
        keys: the secrets keyring, asked for only when a secret needs it: an encrypted secret is
            decrypted in memory and named by a keyed digest of its content (see secrets.py); a
            plain one gets that digest as a label, so that a changed file is noticed.
    """
    stack = config.name
    used_networks: set[str] = set()
    for service in config.services.values():
        used_networks.update(service.get("networks") or {DEFAULT_NETWORK: {}})
    networks: dict[str, dict[str, Any]] = {}
    external_networks: list[str] = []
    for internal in sorted(used_networks):
        net = config.networks.get(internal, {})
        if net.get("external"):
            external_networks.append(net["name"])
            continue
        name = net.get("name") or scope(stack, internal)
        body: dict[str, Any] = {
            "Name": name,
            "Driver": net.get("driver") or "overlay",
            "Labels": stack_labels(stack, net.get("labels")),
        }
        if net.get("driver_opts"):
            body["Options"] = dict(net["driver_opts"])
        if net.get("internal"):
            body["Internal"] = True
        if net.get("attachable"):
            body["Attachable"] = True
        ipam = net.get("ipam") or {}
        if ipam.get("driver") or ipam.get("config"):
            body["IPAM"] = {
                "Driver": ipam.get("driver", ""),
                "Config": [{"Subnet": c["subnet"]} for c in ipam.get("config", [])],
            }
        networks[name] = body

    warnings: list[str] = []
    secrets, external_secrets, secret_names = _file_objects(config, "secrets", keys, warnings)
    configs, external_configs, _ = _file_objects(config, "configs", None, warnings)
    services = {scope(stack, name): convert_service(config, name, secret_names) for name in sorted(config.services)}
    return DesiredStack(
        stack,
        networks,
        external_networks,
        secrets,
        configs,
        services,
        external_secrets,
        external_configs,
        warnings,
        config.digest,
    )


def _read_object_file(kind: str, name: str, obj: Mapping[str, Any]) -> bytes:
    """The content of a secret's or config's ``file:``, refused at the stack file's line when it is
    not a regular file (files.read_regular) or larger than swarm takes: 500 KiB for a secret and for
    a config alike (swarmkit's MaxSecretSize and MaxConfigSize). An encrypted secret file may be
    twice that (base64 and a header; `secrets set` refuses a larger value)."""
    path = Path(obj["file"])
    f, line = obj["_at"]
    limit = secret_files.MAX_FILE if kind == "secrets" else secret_files.MAX_SIZE
    try:
        content = read_regular(path, limit, f"{kind[:-1]} files")
    except InputError as e:
        raise InputError(f"{kind[:-1]} {name}: {path}: {e.message}", f, line) from None
    if len(content) > secret_files.MAX_SIZE and not secret_files.is_encrypted(content):
        raise InputError(
            f"{kind[:-1]} {name}: {path}: larger than {secret_files.MAX_SIZE} bytes, more than swarm takes", f, line
        )
    return content


def _file_objects(
    config: StackConfig, kind: str, keys: KeySource | None, warnings: list[str]
) -> tuple[dict[str, FileObject], list[str], dict[str, str]]:
    """(objects by swarm name, external names, file name -> swarm name)."""
    out: dict[str, FileObject] = {}
    external: list[str] = []
    names: dict[str, str] = {}
    for name in sorted(getattr(config, kind)):
        obj = getattr(config, kind)[name]
        full = obj.get("name") or scope(config.name, name)
        names[name] = full
        if obj.get("external"):
            external.append(full)
            continue
        labels = stack_labels(config.name, obj.get("labels"))
        content = b""
        if not obj.get("driver"):
            content = _read_object_file(kind, name, obj)
        ring = None
        if kind == "secrets" and secret_files.is_encrypted(content):
            if keys is None:
                raise InputError(f"secret {name} is encrypted, and no secrets key is at hand", *obj["_at"])
            ring = keys.required()
            content = secret_files.read_secret(Path(obj["file"]), ring, keys.env)
            # swarm secrets cannot change: new content gets a new name, and services move to it
            full = names[name] = secret_files.versioned_name(full, content, ring)
            labels[label.SECRET] = name
        elif kind == "secrets" and not obj.get("driver"):
            ring = keys.optional() if keys is not None else None
            if ring is None:
                warnings.append(
                    f"secret {name}: without a secrets key swarmctl cannot tell a changed file from an unchanged "
                    "one (swarm keeps no readable copy, and swarmctl labels no plain hash); `swarmctl secrets init` "
                    f"or {secret_files.KEY_ENV} enables it"
                )
        spec: dict[str, Any] = {"Name": full, "Labels": labels}
        if obj.get("driver"):
            spec["Driver"] = {"Name": obj["driver"], "Options": dict(obj.get("driver_opts", {}))}
        if obj.get("template_driver"):
            spec["Templating"] = {"Name": obj["template_driver"]}
        digest = None
        if ring is not None:
            digest = ring.digest(content)
            spec["Labels"][label.DIGEST] = secret_files.DIGEST_SCHEME + digest
        out[full] = FileObject(full, spec, content, digest=digest)
    return out, external, names


def convert_service(config: StackConfig, name: str, secret_names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One service's ServiceSpec, field for field as docker/cli's convert.Service builds it."""
    s = config.services[name]
    stack = config.name
    deploy = s.get("deploy", {})
    container: dict[str, Any] = {
        "Image": service_image(s["image"]),  # as docker's API client sends it; the label keeps the file's
        "Labels": stack_labels(stack, s.get("labels")),
        "Privileges": {"CredentialSpec": None, "SELinuxContext": None},
    }
    if "entrypoint" in s:
        container["Command"] = s["entrypoint"]
    if "command" in s:
        container["Args"] = s["command"]
    for key, api in (
        ("hostname", "Hostname"),
        ("working_dir", "Dir"),
        ("user", "User"),
        ("stop_signal", "StopSignal"),
        ("isolation", "Isolation"),
    ):
        if s.get(key):
            container[api] = s[key]
    if s.get("tty"):
        container["TTY"] = True
    if s.get("stdin_open"):
        container["OpenStdin"] = True
    if s.get("read_only"):
        container["ReadOnly"] = True
    if "init" in s:
        container["Init"] = s["init"]
    if "stop_grace_period" in s:
        container["StopGracePeriod"] = s["stop_grace_period"]
    if "oom_score_adj" in s:
        container["OomScoreAdj"] = s["oom_score_adj"]
    env = s.get("environment") or {}
    if env:
        container["Env"] = sorted(k if v is None else f"{k}={v}" for k, v in env.items())
    if s.get("extra_hosts"):
        container["Hosts"] = [f"{ip} {host}" for host, _, ip in (h.partition(":") for h in s["extra_hosts"])]
    if "dns" in s or "dns_search" in s:
        dns: dict[str, Any] = {}
        if "dns" in s:
            dns["Nameservers"] = s["dns"]
        if "dns_search" in s:
            dns["Search"] = s["dns_search"]
        container["DNSConfig"] = dns
    if "healthcheck" in s:
        container["Healthcheck"] = _healthcheck(s["healthcheck"])
    mounts = [_mount(stack, v, config.volumes) for v in s.get("volumes", [])]
    if mounts:
        container["Mounts"] = mounts
    if s.get("sysctls"):
        container["Sysctls"] = {k: v or "" for k, v in s["sysctls"].items()}
    cap_add, cap_drop = _capabilities(s.get("cap_add", []), s.get("cap_drop", []))
    if cap_add:
        container["CapabilityAdd"] = cap_add
    if cap_drop:
        container["CapabilityDrop"] = cap_drop
    if s.get("ulimits"):
        container["Ulimits"] = [
            {"Name": n, "Soft": u["soft"], "Hard": u["hard"]} for n, u in sorted(s["ulimits"].items())
        ]
    secrets = [
        _file_ref(stack, r, config.secrets, "SecretName", "SecretID", secret_names) for r in s.get("secrets", [])
    ]
    if secrets:
        container["Secrets"] = sorted(secrets, key=lambda r: r["SecretName"])
    configs = [_file_ref(stack, r, config.configs, "ConfigName", "ConfigID") for r in s.get("configs", [])]
    credential = s.get("credential_spec") or {}
    if credential:
        if len(credential) > 1:
            raise InputError(f"service {name}: credential_spec takes one of config, file or registry", *s["_at"])
        if "config" in credential:
            cfg = config.configs.get(credential["config"])
            if cfg is None:
                raise InputError(
                    f"service {name}: credential_spec config {credential['config']!r} is not defined", *s["_at"]
                )
            cname = cfg.get("name") or scope(stack, credential["config"])
            configs.append({"ConfigName": cname, "ConfigID": "", "Runtime": {}})
            container["Privileges"]["CredentialSpec"] = {"Config": cname}
        else:
            key, value = next(iter(credential.items()))
            container["Privileges"]["CredentialSpec"] = {key.capitalize(): value}
    if configs:
        container["Configs"] = sorted(configs, key=lambda r: r["ConfigName"])

    task: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": _resources(deploy.get("resources", {})),
        "Placement": _placement(deploy.get("placement", {})),
        "Networks": _networks(stack, name, s.get("networks", {}), config.networks),
        "ForceUpdate": 0,
    }
    restart = _restart_policy(s.get("restart"), deploy.get("restart_policy"))
    if restart is not None:
        task["RestartPolicy"] = restart
    if "logging" in s:
        task["LogDriver"] = {"Name": s["logging"].get("driver", ""), "Options": dict(s["logging"].get("options", {}))}

    labels = {**stack_labels(stack, deploy.get("labels")), label.IMAGE: s["image"]}
    ext = s.get("x-swarmctl") or {}
    for key, tag in (("check", label.CHECK), ("port", label.PORT)):
        if key in ext:
            labels[tag] = str(ext[key])
    if ext.get("standalone"):
        labels[label.STANDALONE] = "true"
    for key, tag in (("group", label.GROUP), ("order", label.ORDER)):
        if key in ext.get("rollout", {}):
            labels[tag] = str(ext["rollout"][key])
    spec: dict[str, Any] = {
        "Name": scope(stack, name),
        "Labels": labels,
        "TaskTemplate": task,
        "Mode": _mode(deploy),
        "EndpointSpec": _endpoint(deploy.get("endpoint_mode", ""), s.get("ports", [])),
    }
    if "update_config" in deploy:
        spec["UpdateConfig"] = _update_config(deploy["update_config"])
    if "rollback_config" in deploy:
        spec["RollbackConfig"] = _update_config(deploy["rollback_config"])
    return spec


def _healthcheck(h: Mapping[str, Any]) -> dict[str, Any]:
    if h.get("disable"):
        return {"Test": ["NONE"]}
    out: dict[str, Any] = {}
    if "test" in h:
        out["Test"] = h["test"]
    for key, api in (
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start_period", "StartPeriod"),
        ("start_interval", "StartInterval"),
        ("retries", "Retries"),
    ):
        if key in h:
            out[api] = h[key]
    return out


def _mount(stack: str, v: Mapping[str, Any], volumes: Mapping[str, Any]) -> dict[str, Any]:
    m: dict[str, Any] = {"Type": v["type"], "Target": v["target"]}
    if v.get("read_only"):
        m["ReadOnly"] = True
    if v.get("consistency"):
        m["Consistency"] = v["consistency"]
    if v["type"] == "volume":
        if v.get("source"):
            top = volumes[v["source"]]
            m["Source"] = top.get("name") or scope(stack, v["source"])
            opts: dict[str, Any] = {}
            if v.get("volume", {}).get("nocopy"):
                opts["NoCopy"] = True
            if not top.get("external"):
                opts["Labels"] = stack_labels(stack, top.get("labels"))
                if top.get("driver") or "driver_opts" in top:
                    opts["DriverConfig"] = {"Name": top.get("driver", ""), "Options": dict(top.get("driver_opts", {}))}
            m["VolumeOptions"] = opts
    elif v["type"] in ("bind", "npipe"):
        m["Source"] = v["source"]
        if "bind" in v:
            m["BindOptions"] = {"Propagation": v["bind"].get("propagation", "")}
    elif v["type"] == "tmpfs" and "tmpfs" in v:
        m["TmpfsOptions"] = {"SizeBytes": v["tmpfs"].get("size", 0)}
    return m


def _file_ref(
    stack: str,
    ref: Mapping[str, Any],
    objects: Mapping[str, Any],
    name_key: str,
    id_key: str,
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    obj = objects[ref["source"]]
    mode = ref.get("mode", 0o444)
    return {
        "File": {
            "Name": ref.get("target") or ref["source"],
            "UID": ref.get("uid") or "0",
            "GID": ref.get("gid") or "0",
            "Mode": mode,
        },
        name_key: (names or {}).get(ref["source"]) or obj.get("name") or scope(stack, ref["source"]),
        id_key: "",
    }


def _capabilities(add: list[str], drop: list[str]) -> tuple[list[str], list[str]]:
    """docker/cli's opts.EffectiveCapAddCapDrop: upper case with a CAP_ prefix; ALL in a list replaces
    that list; a capability in both lists is dropped from the drop list; RESET is ignored; sorted."""

    def norm(caps: list[str]) -> set[str]:
        out = set()
        for c in caps:
            c = c.strip().upper()
            if c not in ("ALL", "RESET") and not c.startswith("CAP_"):
                c = "CAP_" + c
            out.add(c)
        return {"ALL"} if "ALL" in out else out

    a, d = norm(add), norm(drop)
    return sorted(a - {"RESET"}), sorted(d - a - {"RESET"})


def _resources(r: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "limits" in r:
        lim = r["limits"]
        out["Limits"] = {
            "NanoCPUs": lim.get("cpus", 0),
            "MemoryBytes": lim.get("memory", 0),
            "Pids": lim.get("pids", 0),
        }
    if "reservations" in r:
        res = r["reservations"]
        reservations: dict[str, Any] = {"NanoCPUs": res.get("cpus", 0), "MemoryBytes": res.get("memory", 0)}
        if res.get("generic_resources"):
            reservations["GenericResources"] = [
                {"DiscreteResourceSpec": {"Kind": g["kind"], "Value": g["value"]}} for g in res["generic_resources"]
            ]
        out["Reservations"] = reservations
    return out


def _placement(p: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.get("constraints"):
        out["Constraints"] = list(p["constraints"])
    if p.get("preferences"):
        out["Preferences"] = [{"Spread": {"SpreadDescriptor": x["spread"]}} for x in p["preferences"]]
    if p.get("max_replicas_per_node"):
        out["MaxReplicas"] = p["max_replicas_per_node"]
    return out


def _networks(
    stack: str, service: str, service_nets: Mapping[str, Any], networks: Mapping[str, Any]
) -> list[dict[str, Any]]:
    nets = service_nets or {DEFAULT_NETWORK: {}}
    out = []
    for internal, cfg in nets.items():
        top = networks.get(internal, {})
        target = top.get("name") or scope(stack, internal)
        attach: dict[str, Any] = {"Target": target}
        aliases = list(cfg.get("aliases", []))
        if target not in ("host", "bridge", "none", "default") and not target.startswith("container:"):
            # docker adds the service's short name as an alias on user-defined networks
            aliases.append(service)
        if aliases:
            attach["Aliases"] = aliases
        if cfg.get("driver_opts"):
            attach["DriverOpts"] = {k: v or "" for k, v in cfg["driver_opts"].items()}
        out.append(attach)
    return sorted(out, key=lambda n: n["Target"])


def _restart_policy(restart: str | None, policy: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if policy is not None:
        out: dict[str, Any] = {}
        if "condition" in policy:
            out["Condition"] = policy["condition"]
        for key, api in (("delay", "Delay"), ("max_attempts", "MaxAttempts"), ("window", "Window")):
            if key in policy:
                out[api] = policy[key]
        return out
    if not restart or restart == "no":
        return None
    if restart in ("always", "unless-stopped"):
        return {"Condition": "any"}
    m = re.fullmatch(r"on-failure(?::(\d+))?", restart)
    assert m is not None  # the schema checked the form
    return {"Condition": "on-failure", "MaxAttempts": int(m.group(1) or 0)}


def _update_config(u: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"Parallelism": u.get("parallelism", 1)}
    for key, api in (
        ("delay", "Delay"),
        ("failure_action", "FailureAction"),
        ("monitor", "Monitor"),
        ("max_failure_ratio", "MaxFailureRatio"),
        ("order", "Order"),
    ):
        if key in u:
            out[api] = u[key]
    return out


def _mode(deploy: Mapping[str, Any]) -> dict[str, Any]:
    mode = deploy.get("mode", "replicated")
    replicas = deploy.get("replicas")
    if mode == "global":
        return {"Global": {}}
    if mode == "global-job":
        return {"GlobalJob": {}}
    if mode == "replicated-job":
        job: dict[str, Any] = {}
        if replicas is not None:
            job = {"MaxConcurrent": replicas, "TotalCompletions": replicas}
        return {"ReplicatedJob": job}
    return {"Replicated": {} if replicas is None else {"Replicas": replicas}}


def _endpoint(mode: str, ports: list[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"Mode": mode.lower()}
    converted = []
    for p in ports:
        pc: dict[str, Any] = {"Protocol": p.get("protocol", ""), "TargetPort": p["target"]}
        pc["PublishedPort"] = p.get("published", 0)
        pc["PublishMode"] = p.get("mode", "")
        converted.append(pc)
    out["Ports"] = sorted(converted, key=lambda x: x["PublishedPort"])
    return out
