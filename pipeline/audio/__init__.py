"""Audio: decode/resample/normalize, demo catalog synthesis, bad-input fixtures."""
