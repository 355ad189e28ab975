"""models package: one file per model family, an nn.Module with a dataclass config."""
