"""GPT prior over the codes of a mel VQ-VAE: a decoder-only transformer.

The model of the second stage of the seed (a mel VQ-VAE with a GPT over its
codes): one file, one dataclass config, the transformer of nanoGPT
(pre-LayerNorm blocks, learned positions, GELU MLP, tied code embedding and
output head) and the key/value cache of gpt-fast (a small module beside the
attention it serves; `prefill` and `decode_one_token` as two short functions).

Sequences. A VQ-VAE turns a log-mel crop into a grid of codes, `column_height`
rows (frequency, low to high) by W columns (time). The prior reads it in
time-major order, column after column and inside a column from low to high
frequency (`grid_to_sequence`), so that generating forward in the sequence is
generating forward in time. Every sequence starts with a prefix of condition
tokens: a start token, then the speaker, gender and corpus tokens the config
asks for (each from its own range of one condition vocabulary). Logits at the
last prefix position predict the first code; the output head covers codes only.

Context. Learned positions cover `block_size` codes after the prefix. Longer
sequences are trained in windows that start on a column boundary (position p
of a window is always frequency row p % column_height), and `generate` slides
its window the same way: when the context is full it keeps the last half,
aligned to a column, and prefills again.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from samplernn_pase.models.section import ModelSection


@dataclass
class GPTConfig(ModelSection):
    """The transformer part of the `model` section of a gpt_prior config (schema/model_gpt_prior.json)."""

    codebook_size: int = 128     # codes of the VQ-VAE (the vocabulary of the output head)
    column_height: int = 5       # codes per time column of the code grid (mel bins / downsampling)
    block_size: int = 265        # codes in the context after the condition prefix
    num_speakers: int = 0        # 0: no speaker token
    num_genders: int = 0         # 0: no gender token
    num_corpora: int = 0         # 0: no corpus token
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    # Conditioning choices, sampling, and the VQ-VAE the codes come from are the runner's.
    runner_settings = ("vqvae_experiment", "vqvae_epoch", "condition_on_gender", "condition_on_corpus",
                       "prompt_fraction", "samples_per_speaker", "top_k", "top_p")

    def problems(self) -> list[str]:
        """Rules between fields (one field's type and range: schema/model_gpt_prior.json). The
        column height comes from the VQ-VAE experiment (experiment/config.py checks it at `init`)."""
        problems = []
        if self.n_embd % self.n_head:
            problems.append(f"model.n_embd: {self.n_embd} is not a multiple of model.n_head {self.n_head}")
        if self.block_size < 2 * self.column_height:
            problems.append(f"model.block_size: {self.block_size} codes hold less than two time columns "
                            f"of {self.column_height} codes (the sliding window keeps half of it)")
        return problems

    @property
    def condition_sizes(self) -> list[int]:
        """Vocabulary size of each condition token after the start token, in prefix order."""
        return [n for n in (self.num_speakers, self.num_genders, self.num_corpora) if n > 0]

    @property
    def prefix_length(self) -> int:
        return 1 + len(self.condition_sizes)

    @property
    def max_tokens(self) -> int:
        """Longest input: the prefix and all codes of a window but the last (which is only predicted)."""
        return self.prefix_length + self.block_size - 1


def grid_to_sequence(grid: torch.Tensor) -> torch.Tensor:
    """(..., H, W) code grid (H frequency rows, low first; W time columns) -> (..., W * H), time-major."""
    return grid.transpose(-1, -2).reshape(*grid.shape[:-2], -1)


def sequence_to_grid(sequence: torch.Tensor, column_height: int) -> torch.Tensor:
    """Inverse of `grid_to_sequence` for whole columns: (..., W * H) -> (..., H, W)."""
    columns = sequence.shape[-1] // column_height
    return sequence.reshape(*sequence.shape[:-1], columns, column_height).transpose(-1, -2)


class KVCache(nn.Module):
    """Keys and values of every position seen so far, for one attention layer."""

    def __init__(self, batch_size: int, max_tokens: int, n_head: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        super().__init__()
        shape = (batch_size, n_head, max_tokens, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, heads, L, head_dim) at `positions` (L,); return the whole cache."""
        self.k_cache[:, :, positions] = k
        self.v_cache[:, :, positions] = v
        return self.k_cache, self.v_cache


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Full causal pass (positions None), or new tokens at `positions` against the cache
        (`mask`: (L, max_tokens), True where a new token may look)."""
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        if positions is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:
            k, v = self.kv_cache.update(positions, k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(batch, length, width)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, positions=None, mask=None):
        x = x + self.attn(self.ln_1(x), positions, mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.code_embedding = nn.Embedding(config.codebook_size, config.n_embd)
        # One table for the prefix: row 0 is the start token, then speakers, genders, corpora.
        self.condition_embedding = nn.Embedding(1 + sum(config.condition_sizes), config.n_embd)
        self.position_embedding = nn.Embedding(config.max_tokens, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.head = nn.Linear(config.n_embd, config.codebook_size, bias=False)
        self.head.weight = self.code_embedding.weight   # tied, as nanoGPT
        self.apply(self._init_weights)
        for name, parameter in self.named_parameters():   # GPT-2: scaled residual projections
            if name.endswith("proj.weight"):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        self.register_buffer("causal_mask", None, persistent=False)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def condition_tokens(self, speaker=None, gender=None, corpus=None) -> torch.Tensor:
        """(B, prefix_length) rows of the condition table: start, then each label the config has.

        Labels are (B,) index tensors into their own vocabularies; one must be
        given for every non-zero vocabulary size of the config.
        """
        c = self.config
        labels = [(speaker, c.num_speakers, "speaker"), (gender, c.num_genders, "gender"),
                  (corpus, c.num_corpora, "corpus")]
        given = [x for x, _, _ in labels if x is not None]
        batch = given[0].shape[0] if given else 1
        device = self.condition_embedding.weight.device
        columns, offset = [torch.zeros(batch, dtype=torch.long, device=device)], 1
        for values, size, name in labels:
            if size == 0:
                continue
            if values is None:
                raise ValueError(f"the model is conditioned on the {name}: give one per row")
            columns.append(values.to(device).long() + offset)
            offset += size
        return torch.stack(columns, dim=1)

    def embed(self, conditions: torch.Tensor | None, codes: torch.Tensor, start: int) -> torch.Tensor:
        """Token + position embeddings of [conditions, codes], the first at position `start`."""
        parts = [] if conditions is None else [self.condition_embedding(conditions)]
        parts.append(self.code_embedding(codes))
        x = torch.cat(parts, dim=1)
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        return self.drop(x + self.position_embedding(positions))

    def forward(self, codes: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """Logits (B, N, codebook_size): row i predicts codes[:, i] from the prefix and codes[:, :i]."""
        if codes.shape[1] > self.config.block_size:
            raise ValueError(f"{codes.shape[1]} codes exceed block_size {self.config.block_size}")
        x = self.embed(conditions, codes[:, :-1], 0)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x[:, conditions.shape[1] - 1:]))

    # --- cached incremental pass -------------------------------------------------------

    def setup_cache(self, batch_size: int, max_tokens: int | None = None) -> None:
        """Allocate a key/value cache per layer for `batch_size` sequences of up to `max_tokens`
        tokens (default and at most config.max_tokens): each step attends over all of it."""
        c = self.config
        max_tokens = c.max_tokens if max_tokens is None else min(max_tokens, c.max_tokens)
        weight = self.code_embedding.weight
        for block in self.blocks:
            block.attn.kv_cache = KVCache(batch_size, max_tokens, c.n_head, c.n_embd // c.n_head,
                                          weight.dtype, weight.device)
        self.causal_mask = torch.tril(torch.ones(max_tokens, max_tokens, dtype=torch.bool,
                                                 device=weight.device))

    def clear_cache(self) -> None:
        for block in self.blocks:
            block.attn.kv_cache = None
        self.causal_mask = None

    def forward_cached(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits of the last of the embedded tokens `x` at `positions`, through the caches."""
        mask = self.causal_mask[positions]
        for block in self.blocks:
            x = block(x, positions, mask)
        return self.head(self.ln_f(x[:, -1]))


def prefill(model: GPT, conditions: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Fill the caches with the prefix and a window of codes; logits (B, K) of the next code."""
    x = model.embed(conditions, codes, 0)
    return model.forward_cached(x, torch.arange(x.shape[1], device=x.device))


def decode_one_token(model: GPT, code: torch.Tensor, position: int) -> torch.Tensor:
    """One step: the newest code (B,) enters at `position`; logits (B, K) of the one after it."""
    x = model.embed(None, code[:, None], position)
    return model.forward_cached(x, torch.tensor([position], device=x.device))


# --- sampling ---------------------------------------------------------------------------


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Logits outside the k largest of each row set to -inf (ties with the k-th kept)."""
    if k is None or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Nucleus: keep the most probable codes until their probability reaches p (at least one)."""
    if p is None or p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    remove_sorted = mass_before >= p          # the mass before this code already reaches p
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One code (B,) per row of logits (B, K); temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = top_p_filter(top_k_filter(logits.float() / temperature, top_k), top_p)
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model: GPT, conditions: torch.Tensor, num_codes: int, prompt: torch.Tensor | None = None,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """`num_codes` new codes after `prompt` (B, L) (a real sequence's first part: the seed's
    "half" mode) or from nothing; returns (B, L + num_codes). Each new code costs one
    cached step; past `block_size` codes the window slides (module docstring)."""
    c = model.config
    batch = conditions.shape[0]
    codes = conditions.new_zeros(batch, 0) if prompt is None else prompt.long()
    total = codes.shape[1] + num_codes
    window = window_start(codes.shape[1], c)
    model.setup_cache(batch, c.prefix_length + total)
    try:
        logits = prefill(model, conditions, codes[:, window:])
        while codes.shape[1] < total:
            code = sample_next(logits, temperature, top_k, top_p, generator)
            codes = torch.cat([codes, code[:, None]], dim=1)
            if codes.shape[1] == total:
                break
            in_window = codes.shape[1] - window
            if in_window >= c.block_size:     # context full: slide to a column boundary, prefill
                window = window_start(codes.shape[1], c)
                logits = prefill(model, conditions, codes[:, window:])
            else:
                logits = decode_one_token(model, code, c.prefix_length + in_window - 1)
    finally:
        model.clear_cache()
    return codes


def window_start(length: int, config: GPTConfig) -> int:
    """Where the context of the next code starts: 0 while the codes fit, else the first column
    boundary that keeps at most half of block_size codes."""
    if length < config.block_size:
        return 0
    height = config.column_height
    return -(-(length - config.block_size // 2) // height) * height


def bits_per_code(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Negative log2-likelihood (B, N) of every code under its logits."""
    return F.cross_entropy(logits.float().transpose(1, 2), codes, reduction="none") / math.log(2)
