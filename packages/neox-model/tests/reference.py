"""An independent, deliberately plain implementation of the decoder, for checking the package.

It reads a (tensor-parallel size 1) state dict and computes logits with explicit loops over
heads, explicit masks and softmax, written from the papers rather than from the package code.
"""

import math

import torch

ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "relu": lambda x: x.clamp(min=0),
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "swish": lambda x: x / (1 + torch.exp(-x)),
    "softsign": lambda x: x / (1 + x.abs()),
    "mish": lambda x: x * torch.tanh(torch.log1p(torch.exp(x))),
}
GATES = {"geglu": "gelu", "reglu": "relu", "swiglu": "silu", "glu": None, "bilinear": None}


def slopes(n):
    def geometric(k):
        return [2 ** (-8 * (i + 1) / k) for i in range(k)]

    lower = 2 ** math.floor(math.log2(n))
    return geometric(lower) + geometric(2 * lower)[0::2][: n - lower]


def norm(config, state, name, x):
    w = state[f"{name}.weight"]
    b = state.get(f"{name}.bias", 0.0)
    if config.norm == "layernorm":
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + config.layernorm_epsilon) * w + b
    if config.norm == "rmsnorm":
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + config.rms_norm_epsilon) * w + b
    length = torch.sqrt((x * x).sum(-1, keepdim=True)).clamp(min=config.scalenorm_epsilon)
    return x / length * w


def rotate(config, x, positions):
    """Rotary on the first rotary_dim features of x (..., seq, head_dim), pairs (j, j + d/2)."""
    d = config.rotary_dim
    half = d // 2
    out = x.clone()
    for j in range(half):
        theta = config.rotary_emb_base ** (-2 * j / d)
        angle = positions.double() * theta
        cos, sin = torch.cos(angle).float()[:, None], torch.sin(angle).float()[:, None]
        a, b = x[..., j : j + 1], x[..., j + half : j + half + 1]
        out[..., j : j + 1] = a * cos - b * sin
        out[..., j + half : j + half + 1] = b * cos + a * sin
    return out


def linear(state, name, x):
    y = x @ state[f"{name}.weight"].T
    return y + state[f"{name}.bias"] if f"{name}.bias" in state else y


def attention(config, state, name, x, positions):
    heads, kv, hd = config.num_attention_heads, config.kv_heads, config.head_dim
    per = heads // kv
    qkv = linear(state, f"{name}.query_key_value", x)  # (b, s, kv * (per + 2) * hd)
    outs = []
    for head in range(heads):
        group, index = divmod(head, per)
        base = group * (per + 2) * hd
        q = qkv[..., base + index * hd : base + (index + 1) * hd]
        k = qkv[..., base + per * hd : base + (per + 1) * hd]
        v = qkv[..., base + (per + 1) * hd : base + (per + 2) * hd]
        if config.pos_emb == "rotary":
            q, k = rotate(config, q, positions), rotate(config, k, positions)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # (b, s, s)
        i, j = positions[:, None], positions[None, :]
        if config.pos_emb == "alibi":
            scores = scores - slopes(heads)[head] * (i - j)
        banned = j > i
        if config.sliding_window_width is not None:
            banned = banned | (i - j > config.sliding_window_width)
        scores = scores.masked_fill(banned, float("-inf"))
        outs.append(torch.softmax(scores, -1) @ v)
    return linear(state, f"{name}.dense", torch.cat(outs, -1))


def mlp(config, state, name, x):
    h = linear(state, f"{name}.dense_h_to_4h", x)
    if config.activation in GATES:
        up, gate = h.chunk(2, -1)
        act = GATES[config.activation]
        if config.activation == "glu":
            gate = 1 / (1 + torch.exp(-gate))
        elif act is not None:
            gate = ACTIVATIONS[act](gate)
        h = up * gate
    else:
        h = ACTIVATIONS[config.activation](h)
    return linear(state, f"{name}.dense_4h_to_h", h)


def sinusoid(positions, dim):
    freqs = torch.tensor([10000 ** (-2 * j / dim) for j in range(dim // 2)])
    angles = positions.double()[:, None] * freqs.double()[None]
    return torch.cat([angles.sin(), angles.cos()], -1).float()


def logits(config, state, ids):
    positions = torch.arange(ids.shape[1])
    x = state["embed_in.weight"][ids]
    if config.pos_emb == "learned":
        x = x + state["position_embeddings.weight"][positions]
    if config.pos_emb == "sinusoidal":
        x = x + sinusoid(positions, config.hidden_size)
    for layer in range(config.num_layers):
        p = f"layers.{layer}"
        n1 = norm(config, state, f"{p}.input_layernorm", x)
        a = attention(config, state, f"{p}.attention", n1, positions)
        if config.gpt_j_residual:
            n2 = (
                n1 if config.gpt_j_tied else norm(config, state, f"{p}.post_attention_layernorm", x)
            )
            x = x + a + mlp(config, state, f"{p}.mlp", n2)
        else:
            x = x + a
            x = x + mlp(
                config, state, f"{p}.mlp", norm(config, state, f"{p}.post_attention_layernorm", x)
            )
    x = norm(config, state, "final_layer_norm", x)
    return x @ state.get("embed_out.weight", state["embed_in.weight"]).T
