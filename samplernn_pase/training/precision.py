"""`training.precision`: the autocast dtype of the training steps and, for fp16, the
gradient scaler.

"auto" is bf16 on a GPU that has it, else fp16, and fp32 on the CPU; an explicit
"bf16" or "fp16" applies on any device (torch autocasts on the CPU too, slowly).
fp16 has a narrow exponent range: each optimizer gets a `torch.amp.GradScaler` that
multiplies its losses before the backward and divides the gradients back before the
step (the loop's `Trainer.optimize`); its state is in the checkpoint.
"""

from contextlib import AbstractContextManager

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(setting: str, device: torch.device) -> str:
    """"fp32", "bf16" or "fp16": what `setting` means on `device`."""
    if setting != "auto":
        return setting
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """Autocast to the precision's dtype (disabled for fp32)."""
    return torch.autocast(device_type=device.type, dtype=DTYPES.get(precision, torch.float32),
                          enabled=precision in DTYPES)


def gradient_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """One optimizer's loss scaler under fp16; None otherwise."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None
