"""A key/value cache for incremental decoding: per layer, the keys and values of every token
seen so far, preallocated to a maximum length. Under grouped-query attention it holds only the
key/value heads; under tensor parallelism only this rank's heads.

A growing cache (the default) writes each update after the `length` tokens stored and hands the
attention the keys and values so far. A static one (`static=True`) keeps the next position in a
tensor, writes at the given positions and hands the attention its whole buffers, whose unwritten
tail lies after every query and is masked: every decoding step then has the same shapes, and one
compiled step (`torch.compile`) serves them all. A static cache's length is marked dynamic
(`torch._dynamo.mark_dynamic`), so that the step compiled for the first cache also serves caches
of every other length without compiling again.
"""

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
        static: bool = False,
    ) -> None:
        shape = (batch, kv_heads, max_length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        if static and max_length > 1:  # torch.compile specialises lengths 0 and 1 regardless
            for buffer in self.keys + self.values:
                torch._dynamo.mark_dynamic(buffer, 2)
        self.max_length, self.static = max_length, static
        self._length = 0  # tokens already stored (in every layer), when growing
        self._next = torch.zeros(1, dtype=torch.long, device=device)  # the same, when static

    @property
    def length(self) -> int:
        """Tokens already stored (in every layer); reading a static cache's waits for it."""
        return int(self._next) if self.static else self._length

    def positions(self, tokens: int) -> torch.Tensor:
        """The positions (tokens,) of the next `tokens` tokens."""
        device = self._next.device
        if self.static:
            return self._next + torch.arange(tokens, device=device)
        return torch.arange(self._length, self._length + tokens, device=device)

    def update(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new (batch, kv_heads, new, head_dim) keys/values of `layer`, at `positions`
        (new,), after the cached ones; returns all keys and values so far (views of the cache),
        or, static, the whole buffers."""
        if self.static:
            self.keys[layer].index_copy_(2, positions, keys)
            self.values[layer].index_copy_(2, positions, values)
            return self.keys[layer], self.values[layer]
        end = self._length + keys.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache full: {end} tokens > max_length {self.max_length}")
        self.keys[layer][:, :, self._length : end] = keys
        self.values[layer][:, :, self._length : end] = values
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, tokens: int) -> None:
        """Mark `tokens` more positions as stored, once every layer has been updated."""
        if self.static:
            self._next += tokens
        else:
            self._length += tokens
