"""Every command group, imported once so that its commands register on ``cli``."""

from swarmctl.cli import daytwo, images, lab, secrets, stack, start, swarm

__all__ = ["daytwo", "images", "lab", "secrets", "stack", "start", "swarm"]
