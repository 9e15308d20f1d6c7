"""Facts: API and host data parsed once into views (nodes, services, stacks, host preflight)."""
