"""Training loops: the contrastive token embedder (token_embedder), the dream VAE (vae) and the catalog VAE (catalog_vae)."""
