"""A small variational autoencoder (Kingma & Welling), the "dream generator" of the spec.

    x [B, input_dim] -> fc1 (ReLU) -> fc21: mu [B, latent_dim]
                                   -> fc22: logvar [B, latent_dim]
    z = mu + exp(logvar / 2) * eps,  eps ~ N(0, I)
    z -> fc3 (ReLU) -> fc4 -> sigmoid (pixels in [0, 1]) or identity (real-valued inputs)

The MNIST spec: input 784, hidden 400, latent 2, BCE (summed) + KLD. The catalog map uses the same
class with ``input_dim`` taken from the track embeddings, a linear output and a Gaussian (squared
error) reconstruction term, because embeddings are real numbers and not probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VAE(nn.Module):
    def __init__(self, input_dim: int, hidden: int, latent_dim: int, sigmoid: bool = True):
        super().__init__()
        self.input_dim, self.hidden, self.latent_dim, self.sigmoid = input_dim, hidden, latent_dim, sigmoid
        self.fc1 = nn.Linear(input_dim, hidden)
        self.fc21 = nn.Linear(hidden, latent_dim)  # mu
        self.fc22 = nn.Linear(hidden, latent_dim)  # logvar
        self.fc3 = nn.Linear(latent_dim, hidden)
        self.fc4 = nn.Linear(hidden, input_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x))
        return self.fc21(h), self.fc22(h)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        std = torch.exp(0.5 * logvar)
        return mu + std * torch.randn_like(std)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.fc4(F.relu(self.fc3(z)))
        return torch.sigmoid(out) if self.sigmoid else out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x.view(-1, self.input_dim))
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar

    def config(self) -> dict:
        return {"input_dim": self.input_dim, "hidden": self.hidden, "latent_dim": self.latent_dim, "sigmoid": self.sigmoid}


def kld(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)), summed over the batch: -0.5 * sum(1 + logvar - mu^2 - exp(logvar))."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def loss_function(recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The spec's loss: binary cross-entropy summed over pixels and batch, plus the KL divergence."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, recon_x.shape[-1]), reduction="sum")
    return bce + kld(mu, logvar)


def gaussian_loss_function(recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """For real-valued inputs: the negative log-likelihood of a unit-variance Gaussian (0.5 * squared error, summed,
    constants dropped) plus the KL divergence. Inputs should be standardized so that unit variance is the right scale."""
    return 0.5 * F.mse_loss(recon_x, x.view(-1, recon_x.shape[-1]), reduction="sum") + kld(mu, logvar)
