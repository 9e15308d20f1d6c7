"""Every command group, imported once so that its commands register on ``cli``."""

from swarmctl.cli import images, lab, secrets, stack, swarm

__all__ = ["images", "lab", "secrets", "stack", "swarm"]
