"""One runner per model family; the training loop is shared (training/loop.py)."""

import importlib

from ..errors import UserError

RUNNERS = {
    "samplernn": "samplernn_pase.runners.samplernn:SampleRNNRunner",
    "melnet": "samplernn_pase.runners.melnet:MelNetRunner",
    "pase": "samplernn_pase.runners.pase:PASERunner",
    "vqvae": "samplernn_pase.runners.vqvae:VQVAERunner",
    "gpt_prior": "samplernn_pase.runners.gpt_prior:GPTPriorRunner",
    "cwgan_gp": "samplernn_pase.runners.cwgan_gp:CWGANGPRunner",
    "acoustic": "samplernn_pase.runners.acoustic:AcousticRunner",
    "hifigan": "samplernn_pase.runners.hifigan:HiFiGANRunner",
}


def runner_class(model_type: str):
    if model_type not in RUNNERS:
        raise UserError(f"model.type: unknown model type {model_type!r}")
    module_name, class_name = RUNNERS[model_type].split(":")
    return getattr(importlib.import_module(module_name), class_name)
