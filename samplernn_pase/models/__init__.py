"""models package: one file per model family, an nn.Module with a dataclass config."""


def checked(config):
    """`config` itself, or a ValueError with the problem its `check()` reports. The VQ-VAE and
    CWGAN-GP configs return a problem as a message (that `init` shows as a config error, see
    experiment/config.py); a model is never built from such a config."""
    problem = config.check()
    if problem:
        raise ValueError(problem)
    return config
