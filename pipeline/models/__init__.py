"""Models: nn.Modules and their loading only (no data, no loops): the token embedder and its InfoNCE loss, the VAE
(dream generator and catalog map), wav2vec2 feature extraction. Training loops live in pipeline/train/, data in pipeline/data/."""
