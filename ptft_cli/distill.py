"""Knowledge distillation: a frozen teacher's soft targets added to a task's own loss.

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * task loss
           (+ the mean squared error of matched hidden states, with `distillation.hidden`)

The term is added in one place, around the task's `loss_sum`: the student's forward call is watched
(`_Watch`), the teacher runs on the very same inputs under `torch.inference_mode()` in eval mode, and
the KL is summed over the items the task's loss counts (examples for classification, target tokens
for language models), so the loop's normalisation, accumulation and distributed sums hold unchanged.
Which logits positions count comes from the batch's labels (positions not -100), or from the task's
`TrainingData.soft_mask` where its labels are laid out otherwise (sft).

Hidden-state matching needs equal widths: a projection would be a trained module outside the model,
saved nowhere a plain `transformers` load would find it, so ptft refuses unequal widths instead.

The teacher is deterministic (eval mode, no dropout, no random draws), so a resumed run is exactly
the uninterrupted one. Pure Python at module level: `ptft validate` runs the checks without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptft_cli.config import Config, DistillationConfig
from ptft_cli.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from ptft_cli.loop import TrainingData
    from ptft_cli.models import Head

KEY = "distillation.teacher"


@dataclass
class Teacher:
    model: Any  # a frozen transformers model in eval mode, on the training device
    ref: str  # the model directory it came from
    settings: DistillationConfig
    autocast: Callable[[], Any]  # the run's training precision


def teacher_dir(ref: str) -> str:
    """A ptft run directory stands for its `model/`; any other reference is used as it is."""
    run_model = Path(ref) / "model"
    return str(run_model) if (run_model / "config.json").is_file() else ref


def check(cfg: Config, task: Any) -> None:
    """Checks without torch: the task distils, the teacher directory holds a model and weights."""
    d = cfg.distillation
    takes = getattr(task, "DISTILLATION", ())
    if d.transfer_data is not None and "transfer_data" not in takes:
        raise ConfigError(
            f"task {task.NAME} does not read distillation.transfer_data",
            where=cfg.where("distillation.transfer_data"),
            key="distillation.transfer_data",
            hint="transfer data (unlabeled rows) is for task: classification; remove the key",
        )
    if d.transfer_data is not None and d.teacher is None:
        raise ConfigError(
            "distillation.transfer_data needs distillation.teacher (the rows take only the teacher's loss)",
            where=cfg.where("distillation.transfer_data"),
            key="distillation.teacher",
            hint="set distillation.teacher, or remove transfer_data",
        )
    if d.teacher is None:
        return
    if "teacher" not in takes:
        raise ConfigError(
            f"task {task.NAME} cannot be distilled",
            where=cfg.where(KEY),
            key=KEY,
            hint="distillation works for task: classification, clm and sft",
        )
    from ptft_cli import models

    ref = teacher_dir(d.teacher)
    where = cfg.where(KEY)
    if not Path(ref).exists():
        raise ConfigError(
            f"teacher {d.teacher}: no such directory",
            where=where,
            key=KEY,
            hint="name a ptft run directory (its model/) or a model folder written by save_pretrained",
        )
    models.check_ref(ref, KEY, where)
    models.check_files(ref, KEY, where, tokenizer=False)


def check_labels(cfg: Config, head: Head) -> None:
    """A classifier's teacher scores the same labels, in the same order (its logits index them)."""
    from ptft_cli import models

    mine = head.config.get("id2label")
    if cfg.distillation.teacher is None or mine is None:
        return
    ref = teacher_dir(cfg.distillation.teacher)
    names = [str(mine[i]) for i in range(len(mine))]
    theirs = models.label_names_of(ref)
    if theirs != names:
        shown = ", ".join(theirs or []) or "none"
        raise ConfigError(
            f"teacher {ref} has labels [{shown}] but this run's are [{', '.join(names)}]",
            where=cfg.where(KEY),
            key=KEY,
            hint="distil from a classifier trained on the same labels, in the same order (data.labels)",
        )


def load(cfg: Config, head: Head, tokenizer: Any, student: Any, hw: Any) -> Teacher | None:
    """The frozen teacher on the training device, after checking it fits the student: the same
    vocabulary (size and tokens; the teacher reads the student's token ids) and, for hidden-state
    matching, the same width. Raises ConfigError before the run writes anything."""
    d = cfg.distillation
    if d.teacher is None:
        return None
    from ptft_cli import models

    ref, where = teacher_dir(d.teacher), cfg.where(KEY)
    model = models.load_teacher(cfg, head, ref, hw.device)
    size, student_size = (
        model.config.get_text_config().vocab_size,
        student.config.get_text_config().vocab_size,
    )
    if size != student_size:
        raise ConfigError(
            f"teacher {ref} has a vocabulary of {size:,} tokens but the student's has {student_size:,}",
            where=where,
            key=KEY,
            hint="teacher and student must share a tokenizer (set tokenizer.name_or_path to the teacher's)",
        )
    theirs = models.teacher_tokenizer(ref)
    if theirs is not None and theirs.get_vocab() != tokenizer.get_vocab():
        mine = tokenizer.get_vocab()
        differ = sum(1 for t, i in theirs.get_vocab().items() if mine.get(t) != i)
        raise ConfigError(
            f"teacher {ref} has another tokenizer ({differ:,} of {len(theirs):,} tokens differ from the student's)",
            where=where,
            key=KEY,
            hint="teacher and student must share a tokenizer (set tokenizer.name_or_path to the teacher's)",
        )
    if d.hidden:
        widths = model.config.get_text_config().hidden_size, student.config.get_text_config().hidden_size
        if widths[0] != widths[1]:
            raise ConfigError(
                f"hidden-state matching needs equal widths; teacher {widths[0]}, student {widths[1]}",
                where=cfg.where("distillation.hidden"),
                key="distillation.hidden",
                hint="set distillation.hidden: false, or a student as wide as the teacher",
            )
    return Teacher(model, ref, d, hw.autocast)


def wrap(data: TrainingData, teacher: Teacher) -> None:
    """Replace the task's loss with the distillation loss (same items, same normalisation)."""
    hard_loss, soft_mask = data.loss_sum, data.soft_mask
    d = teacher.settings

    def loss_sum(forward: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        watch = _Watch(forward, d.hidden)
        hard = hard_loss(watch, batch)
        student = watch.output
        with teacher.autocast():
            soft_targets = teacher_outputs(teacher.model, watch.inputs, d.hidden)
        logits = student.logits
        mask = None if logits.dim() == 2 else (soft_mask or labelled)(batch, logits)
        loss = d.alpha * d.temperature**2 * kl_sum(logits, soft_targets.logits, mask, d.temperature)
        if d.alpha < 1:
            loss = loss + (1 - d.alpha) * hard
        if d.hidden:
            positions = batch["attention_mask"] if logits.dim() == 2 else mask
            loss = loss + hidden_sum(
                student.hidden_states, soft_targets.hidden_states, positions, logits.dim() == 2
            )
        return loss

    data.loss_sum = loss_sum
    data.summary.append(
        (
            "teacher",
            f"{teacher.ref}, temperature {d.temperature}, alpha {d.alpha}"
            + (", hidden states matched" if d.hidden else ""),
        )
    )


class _Watch:
    """The student's forward as the task calls it, keeping the inputs and the output; attribute reads
    go to the model (a task may inspect it, e.g. sft's `logits_to_keep`)."""

    def __init__(self, forward: Any, hidden: bool):
        self._forward, self._hidden = forward, hidden
        self.inputs: dict[str, Any] = {}
        self.output: Any = None

    def __call__(self, **inputs: Any) -> Any:
        if self._hidden:
            inputs["output_hidden_states"] = True
        self.inputs = {k: v for k, v in inputs.items() if k != "labels"}
        self.output = self._forward(**inputs)
        return self.output

    def __getattr__(self, name: str) -> Any:
        return getattr(self._forward, name)


def teacher_outputs(teacher: Any, inputs: dict[str, Any], hidden: bool) -> Any:
    """The teacher's logits (and hidden states) on the student's inputs, as plain tensors autograd can
    use (inference tensors cannot be saved for backward, hence the clones outside inference mode)."""
    import torch

    with torch.inference_mode():
        out = teacher(**{**inputs, "output_hidden_states": hidden})
    out.logits = out.logits.float().clone()
    if hidden:
        out.hidden_states = tuple(h.clone() for h in out.hidden_states)
    return out


def labelled(batch: dict[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    """Language models whose labels line up with the logits (clm: already shifted): positions not -100."""
    return batch["labels"] != -100


def kl_sum(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """Sum over items of KL(softmax(teacher / T) || softmax(student / T)), in fp32.

    student, teacher: (N, C) classification logits or (B, T, V) token logits; mask: None (every row)
    or (B, T) booleans choosing the positions that count."""
    import torch.nn.functional as F

    s, t = student.float(), teacher.float()
    if mask is not None:
        s, t = s[mask], t[mask]  # (items, V)
    log_q = F.log_softmax(s / temperature, dim=-1)
    log_p = F.log_softmax(t / temperature, dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="sum")


def hidden_sum(
    student: tuple[torch.Tensor, ...],
    teacher: tuple[torch.Tensor, ...],
    positions: torch.Tensor,
    per_row: bool,
) -> torch.Tensor:
    """Squared error of matched hidden states, averaged over the matched layers and the width, summed
    over the loss's items. Student state i (0 = embeddings) matches teacher state i * Lt // Ls.

    positions: (B, T) booleans; per_row (classification): each row's mean over its tokens is one item;
    else (language models) every chosen position is one item."""
    import torch

    n_s, n_t = len(student) - 1, len(teacher) - 1
    pairs = [(student[i].float(), teacher[i * n_t // n_s].float()) for i in range(n_s + 1)]
    error = torch.stack([((s - t) ** 2).mean(-1) for s, t in pairs]).mean(0)  # (B, T)
    weights = positions.to(error.dtype)
    if per_row:
        return ((error * weights).sum(1) / weights.sum(1).clamp(min=1)).sum()
    return (error * weights).sum()
