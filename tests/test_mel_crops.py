"""Log-mel crops for the mel-image families: computed once from the project's mel function,
scaled by the training split's range, cropped at seeded offsets with a resumable position."""

import logging

import numpy as np
import torch

from samplernn_pase.audio.mel import mel_spectrogram
from samplernn_pase.data.mel_crops import MELS_FILE, MelCrops, prepare_mels
from samplernn_pase.data.store import UtteranceStore
from samplernn_pase.experiment.folder import atomic_save_npz

MEL_MODEL = {"type": "vqvae", "n_mels": 32, "n_fft": 512, "hop_length": 160, "win_length": 400,
             "fmin": 0.0, "fmax": 8000.0}


def test_mels_are_scaled_log_mels_and_crops_resume(tmp_path, demo_prepared):
    index, normalization, data_path = demo_prepared
    files = prepare_mels({"model": MEL_MODEL}, index, normalization, data_path,
                         logging.getLogger("test"))
    atomic_save_npz(tmp_path / MELS_FILE, files[MELS_FILE])
    crops = MelCrops.of_experiment(tmp_path)
    assert crops.settings.sample_rate == index["sample_rate"] and crops.settings.fmax == 8000.0
    assert sorted(crops.ids()) == sorted(u["id"] for u in index["utterances"])

    # The stored spectrogram is the project's log-mel, scaled linearly; the training split
    # spans exactly [-1, 1].
    store = UtteranceStore(index, normalization, data_path)
    train = [u["id"] for u in index["utterances"] if u["split"] == "train"]
    reference = {i: mel_spectrogram(torch.from_numpy(np.array(store.load(i).audio)), 16000, 512, 160,
                                    400, 32, 0.0, 8000.0).numpy() for i in train}
    low = min(m.min() for m in reference.values())
    high = max(m.max() for m in reference.values())
    assert np.isclose(crops.scale_min, low) and np.isclose(crops.scale_max, high)
    for utterance_id in train[:5]:
        scaled = crops.mel(utterance_id)
        assert scaled.dtype == np.float32 and scaled.shape == reference[utterance_id].shape
        np.testing.assert_allclose(crops.to_log_mel(scaled), reference[utterance_id],
                                   atol=2e-3 * (high - low))
    assert min(crops.mel(i).min() for i in train) == -1.0
    assert max(crops.mel(i).max() for i in train) == 1.0

    # Crops: fixed size, inside their utterance, resumable mid-epoch, fixed without shuffle.
    loader = crops.loader(train, batch_size=4, crop_frames=64, seed=3, epoch=2)
    batches = [batch["chunk"] for batch in loader]
    assert len(batches) == len(loader) > 2
    assert all(b.shape == (4, 32, 64) and b.dtype == torch.float32 for b in batches)
    resumed = crops.loader(train, batch_size=4, crop_frames=64, seed=3, epoch=2)
    resumed.load_state_dict({"position": 2})
    assert all(torch.equal(a, b) for a, b in zip(batches[2:], [b["chunk"] for b in resumed], strict=True))
    other_epoch = list(crops.loader(train, batch_size=4, crop_frames=64, seed=3, epoch=3))
    assert not torch.equal(other_epoch[0]["chunk"], batches[0])
    fixed = [list(crops.loader(train, 4, 64, seed=3, epoch=e, shuffle=False))[0] for e in (1, 5)]
    assert torch.equal(fixed[0]["chunk"], fixed[1]["chunk"])
    audio = crops.to_audio(torch.from_numpy(crops.mel(train[0])))
    assert audio.shape == (crops.num_frames(train[0]) * 160,) and np.isfinite(audio).all()
