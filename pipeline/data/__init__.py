"""Data for training: track-level splits (and, with the training issue, datasets and collate)."""
