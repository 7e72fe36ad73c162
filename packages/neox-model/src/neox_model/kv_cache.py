"""A key/value cache for incremental decoding: per layer, the keys and values of every token
seen so far, preallocated to a maximum length. Under grouped-query attention it holds only the
key/value heads; under tensor parallelism only this rank's heads."""

from __future__ import annotations

import torch


class KVCache:
    def __init__(
        self,
        num_layers: int,
        batch: int,
        kv_heads: int,
        head_dim: int,
        max_length: int,
        *,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (batch, kv_heads, max_length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.max_length = max_length
        self.length = 0  # tokens already stored (in every layer)

    def update(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new (batch, kv_heads, new, head_dim) keys/values of `layer` after the cached
        ones; returns all keys and values so far (views of the cache)."""
        end = self.length + keys.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache full: {end} tokens > max_length {self.max_length}")
        self.keys[layer][:, :, self.length : end] = keys
        self.values[layer][:, :, self.length : end] = values
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, tokens: int) -> None:
        """Mark `tokens` more positions as stored, once every layer has been updated."""
        self.length += tokens
