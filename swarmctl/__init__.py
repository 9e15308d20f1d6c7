"""swarmctl: stand up and run Docker Swarm clusters over SSH."""

__version__ = "0.1.0"
