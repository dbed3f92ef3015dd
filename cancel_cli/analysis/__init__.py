"""One module per experiment of the paper; each has ``run(config, store)`` and a summary dataclass."""
