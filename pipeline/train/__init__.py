"""Training loops: contrastive embedder (later: VAE)."""
