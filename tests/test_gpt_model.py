"""GPT prior: cached sampling against the full pass, top-k / top-p masks, code order, learning."""

import math

import numpy as np

import pytest
import torch

from samplernn_pase.models.gpt import (GPT, GPTConfig, bits_per_code, decode_one_token, generate,
                                       grid_to_sequence, prefill, sample_next, sequence_to_grid,
                                       top_k_filter, top_p_filter, window_start)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed=0, **overrides):
    settings = dict(codebook_size=11, column_height=3, block_size=12, num_speakers=4, num_genders=2,
                    num_corpora=0, n_layer=2, n_head=2, n_embd=16)
    settings.update(overrides)
    torch.manual_seed(seed)
    return GPT(GPTConfig(**settings)).eval()


def conditions_of(model, batch):
    speaker = torch.arange(batch) % model.config.num_speakers
    gender = torch.arange(batch) % 2 if model.config.num_genders else None
    return model.condition_tokens(speaker, gender)


def test_time_major_order_and_inverse():
    # 2 frequency rows (low first), 3 time columns: column after column, low to high.
    grid = torch.tensor([[1, 3, 5],
                         [2, 4, 6]])
    sequence = grid_to_sequence(grid)
    assert sequence.tolist() == [1, 2, 3, 4, 5, 6]
    assert torch.equal(sequence_to_grid(sequence, 2), grid)


def test_condition_prefix_uses_separate_ranges():
    model = tiny_model(num_corpora=3)
    tokens = model.condition_tokens(torch.tensor([0, 3]), torch.tensor([1, 0]), torch.tensor([2, 0]))
    # start 0; speakers 1..4; genders 5..6; corpora 7..9
    assert tokens.tolist() == [[0, 1, 6, 9], [0, 4, 5, 7]]
    with pytest.raises(ValueError, match="gender"):
        model.condition_tokens(torch.tensor([0]))


@pytest.mark.parametrize("prompt_length", [0, 5])
def test_cached_log_probs_equal_the_full_pass(prompt_length):
    """Teacher-forced: prefill (prefix + a real prompt), then one cached step per code."""
    model = tiny_model()
    batch, n = 3, model.config.block_size
    codes = torch.randint(0, model.config.codebook_size, (batch, n), generator=torch.Generator().manual_seed(1))
    conditions = conditions_of(model, batch)
    with torch.no_grad():
        full = torch.log_softmax(model(codes, conditions), -1)        # (B, N, K)
        model.setup_cache(batch)
        cached = [prefill(model, conditions, codes[:, :prompt_length])]
        for i in range(prompt_length, n - 1):
            cached.append(decode_one_token(model, codes[:, i], model.config.prefix_length + i))
        model.clear_cache()
    cached = torch.log_softmax(torch.stack(cached, 1), -1)
    torch.testing.assert_close(cached, full[:, prompt_length:], atol=1e-5, rtol=0)


def uncached_greedy(model, conditions, prompt, num_codes):
    """Reference: the full pass over the current window for every new code; the window
    slides to `window_start` when it holds block_size codes."""
    codes, start = prompt, window_start(prompt.shape[1], model.config)
    for _ in range(num_codes):
        if codes.shape[1] - start >= model.config.block_size:
            start = window_start(codes.shape[1], model.config)
        window = codes[:, start:]
        logits = model(torch.cat([window, window[:, :1]], 1), conditions)[:, -1]
        codes = torch.cat([codes, logits.argmax(-1, keepdim=True)], 1)
    return codes


@pytest.mark.parametrize("prompt_length,num_codes", [(0, 11), (6, 6), (4, 30)])
def test_cached_generation_matches_recomputation(prompt_length, num_codes):
    """Greedy codes from the cache equal those of recomputing the window each time,
    also past block_size, where the window slides (30 codes with block_size 12)."""
    model = tiny_model(seed=2)
    with torch.no_grad():
        for p in model.parameters():        # sharper distributions: no near-ties for argmax
            p.mul_(8.0)
    conditions = conditions_of(model, 2)
    prompt = torch.randint(0, 11, (2, prompt_length), generator=torch.Generator().manual_seed(3))
    cached = generate(model, conditions, num_codes, prompt, temperature=0)
    with torch.no_grad():
        reference = uncached_greedy(model, conditions, prompt, num_codes)
    assert cached.shape == (2, prompt_length + num_codes)
    assert torch.equal(cached[:, :prompt_length], prompt)
    assert torch.equal(cached, reference)


def test_window_slides_to_column_boundaries():
    config = GPTConfig(codebook_size=4, column_height=3, block_size=12)
    assert window_start(11, config) == 0
    for length in range(12, 40):
        start = window_start(length, config)
        assert start % 3 == 0 and 0 < length - start <= 6


def test_top_k_by_hand():
    logits = torch.tensor([[1.0, 4.0, 2.0, 3.0, 0.0]])
    kept = torch.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [[False, True, False, True, False]]
    assert torch.equal(top_k_filter(logits, None), logits)


def test_top_p_by_hand():
    # probabilities 0.5, 0.25, 0.15, 0.07, 0.03 in a shuffled order
    probs = torch.tensor([[0.15, 0.5, 0.03, 0.25, 0.07]])
    logits = probs.log()
    # p = 0.7: 0.5 < 0.7, 0.5 + 0.25 = 0.75 >= 0.7 -> keep {0.5, 0.25}
    assert torch.isfinite(top_p_filter(logits, 0.7)).tolist() == [[False, True, False, True, False]]
    # p = 0.8: 0.75 < 0.8 -> also 0.15 (0.9 >= 0.8)
    assert torch.isfinite(top_p_filter(logits, 0.8)).tolist() == [[True, True, False, True, False]]
    # p = 0.3: the most probable code alone
    assert torch.isfinite(top_p_filter(logits, 0.3)).tolist() == [[False, True, False, False, False]]
    # renormalized sampling only ever returns kept codes
    draws = torch.stack([sample_next(logits, 1.0, None, 0.7, torch.Generator().manual_seed(s))
                         for s in range(200)])
    assert set(draws.flatten().tolist()) == {1, 3}
    assert set(torch.stack([sample_next(logits, 1.0, 1, None) for _ in range(20)]).flatten().tolist()) == {1}


def structured_sequences(count, length, codebook, speakers, generator):
    """Each speaker counts up through the codes with its own stride, from a random start."""
    speaker = torch.randint(0, speakers, (count,), generator=generator)
    start = torch.randint(0, codebook, (count,), generator=generator)
    stride = speaker + 1
    codes = (start[:, None] + stride[:, None] * torch.arange(length)) % codebook
    return codes, speaker


def test_learns_structure_beyond_the_unigram_baseline():
    """Codes are uniform (unigram entropy log2 K) but predictable from the speaker and the
    previous code: a trained prior must get far below the unigram entropy on new sequences."""
    codebook, speakers, length = 16, 3, 24
    config = GPTConfig(codebook_size=codebook, column_height=4, block_size=length,
                       num_speakers=speakers, n_layer=2, n_head=2, n_embd=32)
    torch.manual_seed(0)
    model = GPT(config)
    generator = torch.Generator().manual_seed(0)
    train_codes, train_speaker = structured_sequences(256, length, codebook, speakers, generator)
    test_codes, test_speaker = structured_sequences(64, length, codebook, speakers, generator)
    counts = torch.bincount(train_codes.flatten(), minlength=codebook).float()
    unigram = counts / counts.sum()
    unigram_bits = float(-(unigram * unigram.log2()).sum())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(150):
        rows = torch.randint(0, 256, (32,), generator=generator)
        conditions = model.condition_tokens(train_speaker[rows])
        loss = bits_per_code(model(train_codes[rows], conditions), train_codes[rows]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        test_bits = float(bits_per_code(model(test_codes, model.condition_tokens(test_speaker)),
                                        test_codes).mean())
    assert unigram_bits > 0.95 * math.log2(codebook)
    # The first code is uniform (4 bits), every later one is determined: the floor is 4 / 24.
    assert test_bits < 0.25 * unigram_bits, (test_bits, unigram_bits)


# --- code grids and windows (data/code_windows.py) ------------------------------------------


def stored_grids(tmp_path, widths, height=3):
    from samplernn_pase.data.code_windows import CodeGrids
    rng = np.random.default_rng(0)
    grids = {f"spk/u{k}": rng.integers(0, 50, size=(height, w)) for k, w in enumerate(widths)}
    path = tmp_path / "codes.npz"
    np.savez(path, **CodeGrids.arrays(grids, 50, "vq", 3))
    return grids, CodeGrids(path)


def test_code_grids_round_trip(tmp_path):
    grids, stored = stored_grids(tmp_path, [4, 1, 7])
    assert stored.column_height == 3 and stored.codebook_size == 50 and stored.vqvae_epoch == 3
    for utterance_id, grid in grids.items():
        assert np.array_equal(stored.grid(utterance_id), grid)
        assert np.array_equal(stored.sequence(utterance_id), grid_to_sequence(torch.from_numpy(grid)).numpy())


def test_windows_tile_every_code_once_in_evaluation(tmp_path):
    from samplernn_pase.data.code_windows import CodeWindowLoader
    grids, stored = stored_grids(tmp_path, [4, 1, 7, 9])
    loader = CodeWindowLoader(stored, list(grids), window_columns=3, batch_size=2, seed=0, epoch=0,
                              shuffle=False)
    seen = {i: [] for i in grids}
    for batch in loader:
        assert batch["codes"].shape[1] <= 9 and batch["codes"].shape == batch["mask"].shape
        for codes, mask, k in zip(batch["codes"], batch["mask"], batch["utterances"]):
            assert mask.sum() % 3 == 0                     # whole columns
            seen[stored.ids[k]].append(codes[mask].numpy())
    for utterance_id in grids:
        assert np.array_equal(np.concatenate(seen[utterance_id]), stored.sequence(utterance_id))


def test_training_windows_start_on_columns_and_resume(tmp_path):
    from samplernn_pase.data.code_windows import CodeWindowLoader
    grids, stored = stored_grids(tmp_path, [4, 1, 7, 9, 12])

    def make():
        return CodeWindowLoader(stored, list(grids), 3, 2, seed=5, epoch=1, shuffle=True)

    batches = list(make())
    for batch in batches:
        for codes, mask, k in zip(batch["codes"], batch["mask"], batch["utterances"]):
            sequence = stored.sequence(stored.ids[k])
            window = codes[mask].numpy()
            starts = [s for s in range(0, len(sequence), 3)
                      if np.array_equal(sequence[s:s + len(window)], window)]
            assert starts, "a window must be a column-aligned piece of its sequence"
    resumed = make()
    next(iter(resumed)), next(iter(resumed))                # two batches, then a checkpoint
    again = make()
    again.load_state_dict(resumed.state_dict())
    rest = list(again)
    assert len(rest) == len(batches) - 2
    for a, b in zip(rest, batches[2:]):
        assert torch.equal(a["codes"], b["codes"])
