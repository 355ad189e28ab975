"""A mel family's named vocoder: the HiFi-GAN experiment of its `model.vocoder_experiment`.

MelNet and the VQ-VAE name one in their config (`init` checks that its mel
analysis is theirs: experiment/config.py `mel_vocoder_problems`); the GPT prior
renders through its VQ-VAE's. `test` and `synthesize` then render the model's
mels through it, and add a `vocoder` reference row (the vocoder on the real
mel: the ceiling of this model + vocoder pipeline) beside `griffin_lim`.
Without one, Griffin-Lim renders as before.
"""

from pathlib import Path

from ..experiment.weights import load_vocoder


def named_vocoder(model_section: dict, experiments_path: Path, device, log, from_release: bool = False):
    """The `MelVocoder` (models/hifigan.py) the section names, or None (Griffin-Lim renders).
    A release is unpacked without the experiments it names: Griffin-Lim renders there."""
    name = model_section.get("vocoder_experiment")
    if name is None:
        return None
    if from_release:
        log.warning("model.vocoder_experiment %s: not part of a release; Griffin-Lim renders", name)
        return None
    vocoder = load_vocoder(Path(experiments_path), name, model_section.get("vocoder_epoch"), device)
    log.info("vocoder: HiFi-GAN experiment %s, epoch %d", name, vocoder.epoch)
    return vocoder
