"""Config of the MOSS-Audio-Tokenizer stand-in (tests only): the field names of the real config."""

from transformers import PretrainedConfig


class MossStandinConfig(PretrainedConfig):
    model_type = "moss_audio_tokenizer_standin"

    def __init__(self, sampling_rate=24000, downsample_rate=1920, causal_transformer_context_duration=10.0,
                 quantizer_kwargs=None, hidden_size=16, **kwargs):
        self.sampling_rate = sampling_rate
        self.downsample_rate = downsample_rate
        self.causal_transformer_context_duration = causal_transformer_context_duration
        self.quantizer_kwargs = quantizer_kwargs or {"quantizer_type": "rvq", "num_quantizers": 32, "codebook_size": 1024}
        self.hidden_size = hidden_size
        super().__init__(**kwargs)
