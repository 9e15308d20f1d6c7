"""Transport: SSH connections and the Docker Engine API over them, with typed errors."""
