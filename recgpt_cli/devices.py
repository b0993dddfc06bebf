"""`--device` for the training stages (train-towers, align): one check and one resolution of `auto`."""

from __future__ import annotations

from recgpt_cli.errors import BadInput


def check_device(name: str) -> None:
    """auto, cpu or cuda[:N], and CUDA only where torch has it: checked before any work, so a typo never surfaces
    after a round of generation or an epoch of training."""
    if name not in ("auto", "cpu") and not (name == "cuda" or name.startswith("cuda:")):
        raise BadInput(f"--device {name!r}: expected auto, cpu or cuda")
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise BadInput(f"--device {name}: this torch has no CUDA device", "use auto or cpu")


def pick_device(name: str = "auto") -> str:
    """The torch device name to run on: CUDA when present for `auto`, else as asked (checked)."""
    import torch

    check_device(name)
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
