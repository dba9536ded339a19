"""The `tokenmux` command: serve, keys, usage."""
