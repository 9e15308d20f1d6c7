from swarmctl.cli import run

run()
