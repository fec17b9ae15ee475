"""The embedded UltraRes demo model: procedural data, its spec, metrics and training script."""
