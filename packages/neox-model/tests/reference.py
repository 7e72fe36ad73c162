"""An independent, deliberately plain implementation of the decoder, for checking the package.

It reads a (tensor-parallel size 1) state dict and computes logits with explicit loops over
heads, explicit masks and softmax, written from the papers rather than from the package code.
"""

import math

import torch

ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "gelu_tanh": lambda x: (
        0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    ),
    "relu": lambda x: x.clamp(min=0),
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "swish": lambda x: x / (1 + torch.exp(-x)),
    "softsign": lambda x: x / (1 + x.abs()),
    "mish": lambda x: x * torch.tanh(torch.log1p(torch.exp(x))),
}
GATES = {
    "geglu": "gelu",
    "geglu_tanh": "gelu_tanh",
    "reglu": "relu",
    "swiglu": "silu",
    "glu": None,
    "bilinear": None,
}


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
        scale = 1 + w if config.rmsnorm_unit_offset else w  # Gemma keeps scale - 1
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + config.rms_norm_epsilon) * scale + b
    length = torch.sqrt((x * x).sum(-1, keepdim=True)).clamp(min=config.scalenorm_epsilon)
    return x / length * w


def scaled_theta(scaling, j, d, base, length):
    """Frequency j of d rotary dimensions under rope_scaling, from the methods' descriptions:
    position interpolation (Chen et al., 2023), Llama 3.1's frequency bands, YaRN (Peng et al.,
    2023: a ramp over dimensions between beta_fast and beta_slow rotations of the original
    context, as its reference code writes it), NTK-aware dynamic base growth."""
    s = scaling
    original = s.original_max_position_embeddings
    if s.rope_type == "dynamic":
        if length > original:
            base = base * (s.factor * length / original - (s.factor - 1)) ** (d / (d - 2))
        return base ** (-2 * j / d)
    theta = base ** (-2 * j / d)
    if s.rope_type == "linear":
        return theta / s.factor
    if s.rope_type == "llama3":
        wavelength = 2 * math.pi / theta
        if wavelength < original / s.high_freq_factor:
            return theta
        if wavelength > original / s.low_freq_factor:
            return theta / s.factor
        blend = (original / wavelength - s.low_freq_factor) / (
            s.high_freq_factor - s.low_freq_factor
        )
        return (1 - blend) * theta / s.factor + blend * theta

    def dim_of(rotations):  # the (fractional) dimension pair that turns `rotations` times
        return d * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = dim_of(s.beta_fast), dim_of(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    interpolated = min(max((j - low) / (high - low), 0.0), 1.0)
    return interpolated * theta / s.factor + (1 - interpolated) * theta


def yarn_attention_factor(scaling):
    if scaling is None or scaling.rope_type != "yarn":
        return 1.0
    if scaling.attention_factor is not None:
        return scaling.attention_factor
    return 0.1 * math.log(scaling.factor) + 1.0 if scaling.factor > 1 else 1.0


def rotate(config, x, positions):
    """Rotary on the first rotary_dim features of x (..., seq, head_dim), pairs (j, j + d/2)."""
    d = config.rotary_dim
    half = d // 2
    out = x.clone()
    scaling = config.rope_scaling
    length = int(positions.max()) + 1
    factor = yarn_attention_factor(scaling)
    for j in range(half):
        theta = config.rotary_emb_base ** (-2 * j / d)
        if scaling is not None:
            theta = scaled_theta(scaling, j, d, config.rotary_emb_base, length)
        angle = positions.double() * theta
        cos = (torch.cos(angle) * factor).float()[:, None]
        sin = (torch.sin(angle) * factor).float()[:, None]
        a, b = x[..., j : j + 1], x[..., j + half : j + half + 1]
        out[..., j : j + 1] = a * cos - b * sin
        out[..., j + half : j + half + 1] = b * cos + a * sin
    return out


def linear(state, name, x):
    y = x @ state[f"{name}.weight"].T
    return y + state[f"{name}.bias"] if f"{name}.bias" in state else y


def attention(config, state, name, x, positions):
    layer = int(name.split(".")[1])
    heads, kv, hd = config.num_attention_heads, config.kv_heads, config.head_dim
    per = heads // kv
    qkv = linear(state, f"{name}.query_key_value", x)  # (b, s, kv * (per + 2) * hd)
    if config.use_qk_layernorm and not config.qk_layernorm_per_head:
        grouped = qkv.unflatten(-1, (kv, per + 2, hd))
        q_all = norm(config, state, f"{name}.q_norm", grouped[..., :per, :].flatten(-3))
        k_all = norm(config, state, f"{name}.k_norm", grouped[..., per, :].flatten(-2))
    outs = []
    for head in range(heads):
        group, index = divmod(head, per)
        base = group * (per + 2) * hd
        q = qkv[..., base + index * hd : base + (index + 1) * hd]
        k = qkv[..., base + per * hd : base + (per + 1) * hd]
        v = qkv[..., base + (per + 1) * hd : base + (per + 2) * hd]
        if config.use_qk_layernorm and config.qk_layernorm_per_head:  # head-wide weights
            q = norm(config, state, f"{name}.q_norm", q)
            k = norm(config, state, f"{name}.k_norm", k)
        elif config.use_qk_layernorm:  # over all heads at once: statistics of the whole width
            q = q_all[..., head * hd : (head + 1) * hd]
            k = k_all[..., group * hd : (group + 1) * hd]
        if config.pos_emb == "rotary":
            q, k = rotate(config, q, positions), rotate(config, k, positions)
        scores = q @ k.transpose(-1, -2) / math.sqrt(config.query_pre_attn_scalar or hd)
        if config.attention_logit_softcapping:  # Gemma 2: cap * tanh(score / cap)
            cap = config.attention_logit_softcapping
            scores = cap * torch.tanh(scores / cap)
        i, j = positions[:, None], positions[None, :]
        if config.pos_emb == "alibi":
            scores = scores - slopes(heads)[head] * (i - j)
        banned = j > i
        window = config.sliding_window_width
        every = config.global_attention_every  # every n-th layer attends globally
        if every is not None and (layer + 1) % every == 0:
            window = None
        if window is not None:
            banned = banned | (i - j > window)
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


def placed_norms_block(config, state, p, x, positions):
    """A sequential block whose attention and MLP outputs are normalised before the residual
    adds; with sandwich norms their inputs are too."""

    def maybe(name, h):
        return norm(config, state, f"{p}.{name}", h) if config.norm_placement == "sandwich" else h

    a = attention(config, state, f"{p}.attention", maybe("input_layernorm", x), positions)
    x = x + norm(config, state, f"{p}.attention_output_layernorm", a)
    m = mlp(config, state, f"{p}.mlp", maybe("post_attention_layernorm", x))
    return x + norm(config, state, f"{p}.mlp_output_layernorm", m)


def sinusoid(positions, dim):
    freqs = torch.tensor([10000 ** (-2 * j / dim) for j in range(dim // 2)])
    angles = positions.double()[:, None] * freqs.double()[None]
    return torch.cat([angles.sin(), angles.cos()], -1).float()


def logits(config, state, ids):
    positions = torch.arange(ids.shape[1])
    x = state["embed_in.weight"][ids]
    if config.scale_embeddings:  # Gemma: times sqrt(hidden), that factor rounded to the dtype
        x = x * torch.tensor(config.hidden_size**0.5, dtype=x.dtype)
    if config.pos_emb == "learned":
        x = x + state["position_embeddings.weight"][positions]
    if config.pos_emb == "sinusoidal":
        x = x + sinusoid(positions, config.hidden_size)
    for layer in range(config.num_layers):
        p = f"layers.{layer}"
        if config.norm_placement != "pre":  # OLMo 2 (post) and Gemma 2 (sandwich)
            x = placed_norms_block(config, state, p, x, positions)
            continue
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
    out = x @ state.get("embed_out.weight", state["embed_in.weight"]).T
    if config.final_logit_softcapping:
        cap = config.final_logit_softcapping
        out = cap * torch.tanh(out / cap)
    return out
