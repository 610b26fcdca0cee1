"""Gradient statistics of every training step, and the watch that warns once when gradients
explode or vanish.

Each step the trainer already needs the norm of every parameter's gradient to clip their total;
``GradientGroups`` folds those same per-tensor norms into one norm per group of weights (the
embedding, each layer's input weights ``weight_ih_l*`` and recurrent weights ``weight_hh_l*``,
the decoder), so the statistics cost no extra pass over the gradients. ``GradientWatch`` reads
them step by step and says, once each, when clipping acts on most recent steps (exploding
gradients) or a layer's recurrent weights get a vanishing share of the gradient. The
thresholds and the reasons for them are in docs/training-diagnostics.md. Torch is imported
only where a tensor is met, so that ``charrnn plot`` reads the constants without it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Exploding: clipping acted on more than half of the last 100 steps. A window of 100 steps
# measures a share near one half to about +-5% and is short next to a run (the small preset
# makes ~7,000 steps in 6 minutes); in normal runs clipping acts on a few of the first steps
# and then rarely, at most 9 in any 100 (docs/training-diagnostics.md has the figures).
CLIP_WINDOW = 100
EXPLODING_SHARE = 0.5

# Vanishing: a layer's recurrent weights get under 1e-4 of the whole gradient's norm on every
# one of 100 steps in a row. Normal runs stay above 1e-2 (docs/training-diagnostics.md); a
# layer whose units saturate falls to 1e-6 and below.
VANISHING_RATIO = 1e-4
VANISHING_STEPS = 100


def group_name(parameter: str) -> str | None:
    """The group a parameter's gradient is reported in: ``embedding``, ``weight_ih_l0``,
    ``weight_hh_l0``, ..., ``decoder``; None for the recurrent biases (in the total only)."""
    module, _, leaf = parameter.rpartition(".")
    if module == "embedding":
        return "embedding"
    if module == "decoder":
        return "decoder"
    if leaf.startswith(("weight_ih_l", "weight_hh_l")):
        return leaf
    return None


class GradientGroups:
    """Which of a model's parameters belong to which group, in ``named_parameters`` order."""

    def __init__(self, named_parameters) -> None:
        self.parameters: list[torch.nn.Parameter] = []
        members: dict[str, list[int]] = {}
        for index, (name, parameter) in enumerate(named_parameters):
            self.parameters.append(parameter)
            group = group_name(name)
            if group is not None:
                members.setdefault(group, []).append(index)
        self.members = members

    def norms(self, tensor_norms: list[float]) -> dict[str, float]:
        """Per group, the norm of its gradients: the root of the sum of its tensors' squares."""
        return {group: math.sqrt(sum(tensor_norms[i] ** 2 for i in indices)) for group, indices in self.members.items()}


def tensor_norms(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """The 2-norm of each gradient, as ``clip_grad_norm_`` computes them (one fused kernel
    where the device has one), so that their total is bit-for-bit the clip's."""
    import torch
    from torch.utils._foreach_utils import _has_foreach_support

    device = grads[0].device
    same_kind = all(g.device == device and g.dtype == grads[0].dtype for g in grads)
    if same_kind and _has_foreach_support(grads, device):
        return list(torch._foreach_norm(grads, 2.0))
    return [torch.linalg.vector_norm(g, 2.0) for g in grads]


@dataclass
class GradientWarning:
    step: int
    kind: str  # "exploding", or "vanishing:weight_hh_l<k>"
    message: str


class GradientWatch:
    """Reads each step's clipping and group norms; returns each kind of warning once per run.
    Its state is saved with the trainer's, so a resumed run neither repeats a warning nor
    forgets the steps that led up to one."""

    def __init__(self, cell: str = "lstm") -> None:
        self.cell = cell
        self.recent_clips: deque[bool] = deque(maxlen=CLIP_WINDOW)
        self.faint_steps: dict[str, int] = {}  # steps in a row under VANISHING_RATIO, per group
        self.warned: set[str] = set()

    def clip_share(self) -> float:
        return sum(self.recent_clips) / len(self.recent_clips) if self.recent_clips else 0.0

    def observe(
        self, step: int, grad_norm: float, clipped: bool, groups: dict[str, float], grad_clip: float
    ) -> list[GradientWarning]:
        self.recent_clips.append(clipped)
        warnings = []
        clips = sum(self.recent_clips)
        if (
            "exploding" not in self.warned
            and len(self.recent_clips) == CLIP_WINDOW
            and clips > EXPLODING_SHARE * CLIP_WINDOW
        ):
            self.warned.add("exploding")
            warnings.append(
                GradientWarning(
                    step,
                    "exploding",
                    f"gradients explode: clipping acted on {clips} of the last {CLIP_WINDOW} steps "
                    f"(gradient norm {grad_norm:.3g} against --grad-clip {grad_clip:g}), so the clip, "
                    "not the learning rate, sets the size of the updates; lower --lr, or raise "
                    "--grad-clip if the norms are steady (charrnn plot RUN --gradients shows them)",
                )
            )
        for group, norm in groups.items():
            if not group.startswith("weight_hh_l"):
                continue
            if not (math.isfinite(grad_norm) and grad_norm > 0):
                continue  # a skipped (fp16 overflow) or empty step says nothing about the share
            ratio = norm / grad_norm
            self.faint_steps[group] = self.faint_steps.get(group, 0) + 1 if ratio < VANISHING_RATIO else 0
            kind = f"vanishing:{group}"
            if kind not in self.warned and self.faint_steps[group] >= VANISHING_STEPS:
                self.warned.add(kind)
                layer = group.removeprefix("weight_hh_l")
                warnings.append(
                    GradientWarning(
                        step,
                        kind,
                        f"gradients vanish in layer {layer}: its recurrent weights ({group}) got under "
                        f"{VANISHING_RATIO:g} of the gradient norm on each of the last "
                        f"{VANISHING_STEPS} steps (now {ratio:.1e}), so they barely learn; its units "
                        "are likely saturated: lower --lr"
                        + (", or use --cell lstm or gru, whose gates carry gradients further" if self.cell == "rnn" else "")
                        + "; charrnn plot RUN --gradients shows every layer's gradients",
                    )
                )
        return warnings

    def state_dict(self) -> dict:
        return {
            "recent_clips": [int(c) for c in self.recent_clips],
            "faint_steps": dict(self.faint_steps),
            "warned": sorted(self.warned),
        }

    def load_state_dict(self, state: dict) -> None:
        self.recent_clips = deque((bool(c) for c in state.get("recent_clips", [])), maxlen=CLIP_WINDOW)
        self.faint_steps = {str(k): int(v) for k, v in state.get("faint_steps", {}).items()}
        self.warned = set(state.get("warned", []))
