"""Models: the contrastive token embedder (later: VAE, wav2vec2 features, ASR)."""
