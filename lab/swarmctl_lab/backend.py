"""The lab's two kinds of hosts - network namespaces (hosts.py) and qemu VMs (vm.py) - behind one
interface, chosen in one place from the lab's kind. Both share the naming, the bridge, the keys,
the registry and the teardown of hosts.py; only how a host is made, asked about, and given its
images differs."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from swarmctl.plan import Notify, quiet
from swarmctl_lab import hosts, images, vm
from swarmctl_lab.hosts import HostStatus, LabSpec


class Backend(Protocol):
    def bring_up(self, spec: LabSpec, report: Notify = quiet) -> Path:
        """Make the lab's hosts (removing an earlier lab of the same directory); the inventory's path."""
        ...

    def status(self, spec: LabSpec) -> list[HostStatus]: ...

    def images(self, spec: LabSpec, archive: Path, report: Notify = quiet) -> None:
        """Give every host the lab's images (or check that it has them)."""
        ...


class Namespaces:
    """Hosts in network namespaces of this machine: images loaded into each host's engine."""

    def bring_up(self, spec: LabSpec, report: Notify = quiet) -> Path:
        hosts.check_prerequisites()  # root and the commands, before a first build of the images
        bundle = images.ensure_bundle(report=report)

        def load_images(s: LabSpec) -> dict[str, str]:
            images.load_into_hosts(s, bundle, report=report)  # nothing to do on seeded hosts
            return images.lab_vars()

        seed = images.seed_for(bundle)
        return hosts.bring_up(spec, report=report, prepare=load_images, with_registry=True, seed=seed)

    def status(self, spec: LabSpec) -> list[HostStatus]:
        return hosts.host_status(spec)

    def images(self, spec: LabSpec, archive: Path, report: Notify = quiet) -> None:
        images.load_into_hosts(spec, archive, report=report)


class VMs:
    """qemu VMs on the lab's bridge: images baked into their root image."""

    def bring_up(self, spec: LabSpec, report: Notify = quiet) -> Path:
        return vm.bring_up(spec, report=report)

    def status(self, spec: LabSpec) -> list[HostStatus]:
        return vm.host_status(spec)

    def images(self, spec: LabSpec, archive: Path, report: Notify = quiet) -> None:
        vm.check_images(spec, images.bundle_ids(archive))


def backend(kind: str) -> Backend:
    """The backend of a lab's kind ("netns" or "vm")."""
    return VMs() if kind == "vm" else Namespaces()
