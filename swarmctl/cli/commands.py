"""Every command group, imported once so that its commands register on ``cli``."""

from swarmctl.cli import daily, daytwo, hosts, images, lab, secrets, stack, start, swarm

__all__ = ["daily", "daytwo", "hosts", "images", "lab", "secrets", "stack", "start", "swarm"]
