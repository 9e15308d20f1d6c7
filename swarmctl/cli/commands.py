"""Every command group, imported once so that its commands register on ``cli``."""

from swarmctl.cli import lab, secrets, stack, swarm

__all__ = ["lab", "secrets", "stack", "swarm"]
