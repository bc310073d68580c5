"""A small model with MOSS-Audio-Tokenizer's encode/decode contract (tests only).

A strided convolution makes one frame per `downsample_rate` samples; a residual quantizer with random
codebooks turns frames into codes (num_quantizers, B, T); decode inverts it with a transposed
convolution. Streaming (`chunk_duration`) obeys the real model's rules: batch size 1, at most the
context duration, a whole number of frames per chunk.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_moss_standin import MossStandinConfig


@dataclass
class StandinEncoderOutput(ModelOutput):
    audio_codes: torch.Tensor | None = None
    audio_codes_lengths: torch.Tensor | None = None


@dataclass
class StandinDecoderOutput(ModelOutput):
    audio: torch.Tensor | None = None
    audio_lengths: torch.Tensor | None = None


class MossStandinModel(PreTrainedModel):
    config_class = MossStandinConfig
    main_input_name = "input_values"

    def __init__(self, config):
        super().__init__(config)
        q = config.quantizer_kwargs
        self.encoder = nn.Conv1d(1, config.hidden_size, config.downsample_rate, stride=config.downsample_rate)
        self.codebooks = nn.Parameter(torch.randn(q["num_quantizers"], q["codebook_size"], config.hidden_size))
        self.decoder = nn.ConvTranspose1d(config.hidden_size, 1, config.downsample_rate, stride=config.downsample_rate)
        self.post_init()

    def _init_weights(self, module):
        pass

    def _encode_frame(self, x, lengths, n_q):
        T = x.shape[-1]
        if T % self.config.downsample_rate:
            x = F.pad(x, (0, self.config.downsample_rate - T % self.config.downsample_rate))
        residual = self.encoder(x).transpose(1, 2)  # B, T, H
        n_q = n_q or self.codebooks.shape[0]
        codes = []
        for q in range(n_q):
            book = self.codebooks[q].to(residual.dtype)
            idx = torch.cdist(residual.float(), book.float()).argmin(-1)  # B, T
            codes.append(idx)
            residual = residual - book[idx]
        code_lengths = (lengths + self.config.downsample_rate - 1) // self.config.downsample_rate
        return torch.stack(codes), code_lengths

    def encode(self, input_values, padding_mask=None, num_quantizers=None, return_dict=None, chunk_duration=None):
        if input_values.dim() == 2:
            input_values = input_values.unsqueeze(1)
        B, _, T = input_values.shape
        lengths = padding_mask.sum(-1).long() if padding_mask is not None else torch.full((B,), T, dtype=torch.long)
        if chunk_duration is None:
            codes, code_lengths = self._encode_frame(input_values, lengths, num_quantizers)
        else:
            if chunk_duration > self.config.causal_transformer_context_duration:
                raise ValueError("`chunk_duration` must be <= `config.causal_transformer_context_duration`")
            if B != 1:
                raise ValueError("Streaming encode via `chunk_duration` currently only supports batch_size=1.")
            chunk = int(round(chunk_duration * self.config.sampling_rate))
            if chunk % self.config.downsample_rate:
                raise ValueError("`chunk_duration * config.sampling_rate` must be divisible by `config.downsample_rate`.")
            n = int(lengths[0])
            parts = []
            for start in range(0, n, chunk):
                piece = input_values[..., start : min(start + chunk, n)]
                c, cl = self._encode_frame(piece, torch.tensor([piece.shape[-1]]), num_quantizers)
                parts.append(c[:, :, : cl[0]])
            codes = torch.cat(parts, dim=-1)
            code_lengths = torch.tensor([codes.shape[-1]])
        return StandinEncoderOutput(audio_codes=codes, audio_codes_lengths=code_lengths)

    def decode(self, audio_codes, padding_mask=None, return_dict=None, chunk_duration=None, num_quantizers=None):
        if audio_codes.dim() == 2:
            audio_codes = audio_codes.unsqueeze(1)
        z = sum(self.codebooks[q][audio_codes[q]] for q in range(audio_codes.shape[0]))  # B, T, H
        audio = self.decoder(z.transpose(1, 2))
        return StandinDecoderOutput(audio=audio, audio_lengths=torch.full((audio.shape[0],), audio.shape[-1]))
