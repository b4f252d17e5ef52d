"""Fine-tuning controls applied around a head's model: freezing (static and gradual), dropout
overrides, layer-wise learning-rate decay, LoRA adapters (peft), and loading a run's model back.

Nothing here knows a model type. A model's anatomy is found from its structure: the backbone is the
transformers model inside whatever the head built, its layer stack the longest ``ModuleList`` in
the backbone (BERT's ``encoder.layer``, GPT-2's ``h``); every parameter is then in the embeddings,
one layer, the "top" (pooler, final norm) or the head.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Union

import attrs

from .errors import ConfigError

#: A LoRA run's ``model/`` holds this (peft's adapter config) instead of full weights.
ADAPTER_CONFIG = "adapter_config.json"

#: model.config keys that record dropout, so that a saved model's config shows the override.
HIDDEN_DROPOUT_KEYS = ("hidden_dropout_prob", "resid_pdrop", "embd_pdrop", "dropout", "hidden_dropout", "classifier_dropout")
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attn_pdrop", "attention_dropout")

Part = Union[str, int]  # "embeddings", a layer index (0 = bottom), "top" or "head"


# --- the four calls the training loop makes -----------------------------------------------------


def prepare_model(model, config):
    """Apply ``config.train.dropout``, ``config.train.lora`` and the initial state of
    ``config.train.freeze`` to a freshly built model; returns the model to train (a peft model
    when LoRA is on)."""
    anatomy = find_anatomy(model)
    check_freeze(config, anatomy)
    override_dropout(model, config.train.dropout)
    if config.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if config.train.lora is not None:
        return add_lora(model, config.train.lora, anatomy)
    apply_freeze(model, config, epoch=0)
    return model


def enable_gradient_checkpointing(model) -> None:
    """``train.gradient_checkpointing``: each transformer layer's activations are recomputed in
    the backward pass instead of kept (transformers' own switch, on the model or, for a head of a
    plugin's own, on the Hugging Face models inside it). Non-reentrant: frozen embeddings, LoRA
    and FSDP need no input that requires grad."""
    from transformers import PreTrainedModel

    found = [module for module in model.modules() if isinstance(module, PreTrainedModel) and module.supports_gradient_checkpointing]
    outermost = [m for m in found if not any(m is not other and any(sub is m for sub in other.modules()) for other in found)]
    if not outermost:
        raise ConfigError(f"train.gradient_checkpointing: the model ({type(model).__name__}) has no transformers model inside that supports it")
    for module in outermost:  # transformers 5 names it activation checkpointing (the old name warns)
        enable = getattr(module, "activation_checkpointing_enable", None) or module.gradient_checkpointing_enable
        enable({"use_reentrant": False})


def start_epoch(model, config, epoch: int) -> None:
    """Gradual unfreezing: at the start of each epoch (0-based) make one more layer trainable.

    The state depends on the epoch alone, so a resumed run gets it right too."""
    if config.train.freeze.strategy == "gradual":
        apply_freeze(model, config, epoch)


def parameter_groups(model, optimizer_config) -> list[dict]:
    """Optimiser parameter groups: weight decay on weight matrices only; with
    ``optimizer_config.layer_lr_decay`` one learning rate per layer depth.

    Frozen parameters are included (they get no gradient, so optimisers skip them) so that gradual
    unfreezing works with one optimiser; the base weights peft froze are left out."""
    lora = is_peft_model(model)
    parameters = [(name, p) for name, p in model.named_parameters() if p.requires_grad or not lora]
    weight_decay = optimizer_config.weight_decay
    if optimizer_config.layer_lr_decay is None:
        decay = [p for name, p in parameters if takes_weight_decay(name, p)]
        no_decay = [p for name, p in parameters if not takes_weight_decay(name, p)]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    anatomy = find_anatomy(model)
    num_layers = anatomy.require_layers("optimizer.layer_lr_decay")
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in parameters:
        depth = depth_below_head(anatomy.parts[name], num_layers)
        decays = takes_weight_decay(name, parameter)
        group = groups.setdefault(
            (depth, decays),
            {"params": [], "weight_decay": weight_decay if decays else 0.0, "lr": optimizer_config.lr * optimizer_config.layer_lr_decay**depth},
        )
        group["params"].append(parameter)
    # The head's groups first: the loop logs the first group's learning rate.
    return [groups[key] for key in sorted(groups)]


def load_trained_model(head, config, spec: dict, model_dir):
    """The model a run saved in ``model_dir``: ``head.load`` for full weights; for a LoRA run the
    base model (``head.build(config.model, spec)``) with the saved adapter on top."""
    model_dir = Path(model_dir)
    if not is_lora_model_dir(model_dir):
        return head.load(model_dir)
    import peft

    base = head.build(config.model, spec)
    override_dropout(base, config.train.dropout)  # so that a merged export's config records it
    return peft.PeftModel.from_pretrained(base, model_dir)


def check_head(head, config, task=None) -> None:
    """Refuse settings the head (or the task) cannot honour (called once the head is resolved)."""
    if config.train.label_smoothing > 0 and not getattr(head, "supports_label_smoothing", False):
        raise ConfigError(f"train.label_smoothing: head '{config.head.name}' does not use a cross-entropy loss")
    if config.train.label_smoothing > 0 and not getattr(task, "supports_label_smoothing", True):
        raise ConfigError(f"train.label_smoothing: task '{config.task.name}', as configured, does not predict one class out of several (a number, or several labels per text): nothing to smooth")


# --- anatomy ------------------------------------------------------------------------------------


@attrs.frozen
class Anatomy:
    """Where each parameter sits, by its name in ``model.named_parameters()``."""

    backbone: object  # the transformers base model; None when the model holds none
    parts: dict[str, Part]
    num_layers: int | None  # None: no layer stack found

    def require_backbone(self, key: str):
        if self.backbone is None:
            raise ConfigError(f"{key}: the model holds no transformers PreTrainedModel to find its layers in")
        return self.backbone

    def require_layers(self, key: str) -> int:
        self.require_backbone(key)
        if self.num_layers is None:
            raise ConfigError(f"{key}: no layer stack (torch.nn.ModuleList) found in {type(self.backbone).__name__}")
        return self.num_layers


def find_anatomy(model) -> Anatomy:
    backbone = find_backbone(model)
    if backbone is None:
        return Anatomy(None, {name: "head" for name, _ in model.named_parameters()}, None)
    stack = find_layer_stack(backbone)
    layer_of = {id(p): i for i, layer in enumerate(stack or []) for p in layer.parameters()}
    part_of: dict[int, Part] = {}
    stack_seen = False
    for name, parameter in backbone.named_parameters():
        if id(parameter) in layer_of:
            part_of[id(parameter)] = layer_of[id(parameter)]
            stack_seen = True
        elif "embed" in name.lower() or (stack is not None and not stack_seen):
            part_of[id(parameter)] = "embeddings"  # registered before the stack: what feeds it
        else:
            part_of[id(parameter)] = "top"
    parts = {name: part_of.get(id(p), "head") for name, p in model.named_parameters()}
    return Anatomy(backbone, parts, len(stack) if stack is not None else None)


def find_backbone(model):
    """The transformers base model: the model's own, or that of the first PreTrainedModel inside it
    (wrapper heads hold one as ``.encoder``; a peft model holds the head's model)."""
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return model.base_model
    return next((m.base_model for m in model.modules() if isinstance(m, PreTrainedModel)), None)


def find_layer_stack(backbone):
    import torch

    stacks = [m for m in backbone.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    return max(stacks, key=len) if stacks else None


def depth_below_head(part: Part, num_layers: int) -> int:
    """0 for the head and top, num_layers - i for layer i, num_layers + 1 for the embeddings."""
    if part == "embeddings":
        return num_layers + 1
    if isinstance(part, int):
        return num_layers - part
    return 0


def takes_weight_decay(name: str, parameter) -> bool:
    return parameter.ndim >= 2 and "norm" not in name.lower()


# --- freezing -----------------------------------------------------------------------------------


def check_freeze(config, anatomy: Anatomy) -> None:
    freeze = config.train.freeze
    if freeze.strategy == "all":
        return
    if config.train.lora is not None:
        raise ConfigError(f"train.freeze.strategy: '{freeze.strategy}' cannot be combined with train.lora (LoRA already freezes the pretrained weights)")
    if freeze.strategy in ("head_only", "embeddings_frozen"):
        anatomy.require_backbone("train.freeze.strategy")
        return
    num_layers = anatomy.require_layers("train.freeze.strategy")
    if freeze.strategy == "top_k":
        if freeze.k is None:
            raise ConfigError("train.freeze.k: required by strategy top_k")
        if freeze.k > num_layers:
            raise ConfigError(f"train.freeze.k: {freeze.k} is more than the model's {num_layers} layers")


def trained_parts(freeze, num_layers: int, epoch: int) -> set[Part]:
    layers = list(range(num_layers))
    if freeze.strategy == "head_only":
        return {"head"}
    if freeze.strategy == "embeddings_frozen":
        return {"head", "top", *layers}
    if freeze.strategy == "top_k":
        return {"head", "top", *layers[num_layers - freeze.k :]}
    # gradual (ULMFiT): the head alone first, then the top and one more layer per epoch; the
    # embeddings last, once every layer trains
    if epoch == 0:
        return {"head"}
    embeddings = ["embeddings"] if epoch > num_layers else []
    return {"head", "top", *layers[max(0, num_layers - epoch) :], *embeddings}


def apply_freeze(model, config, epoch: int) -> None:
    freeze = config.train.freeze
    if freeze.strategy == "all":
        return  # touch nothing: peft's own freezing stays as it is
    anatomy = find_anatomy(model)
    trained = trained_parts(freeze, anatomy.num_layers or 0, epoch)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(anatomy.parts[name] in trained)


# --- dropout ------------------------------------------------------------------------------------


def override_dropout(model, dropout) -> None:
    """Set every ``nn.Dropout``'s probability: attention dropout where the module is named for
    attention or sits beside the query/key/value projections, hidden dropout everywhere else."""
    if dropout.hidden is None and dropout.attention is None:
        return
    import torch

    for parent in model.modules():
        beside_projections = sum(isinstance(c, torch.nn.Linear) for c in parent.children()) >= 3
        for name, child in parent.named_children():
            if not isinstance(child, torch.nn.Dropout):
                continue
            attention = beside_projections or "attn" in name.lower() or "attention" in name.lower()
            p = dropout.attention if attention else dropout.hidden
            if p is not None:
                child.p = p  # transformers' attention functions read .p at each forward
    for model_config in transformers_configs(model):
        for keys, p in ((HIDDEN_DROPOUT_KEYS, dropout.hidden), (ATTENTION_DROPOUT_KEYS, dropout.attention)):
            for key in keys:
                value = getattr(model_config, key, None)
                if p is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
                    setattr(model_config, key, p)


def transformers_configs(model) -> list:
    from transformers import PreTrainedModel

    configs = {id(m.config): m.config for m in model.modules() if isinstance(m, PreTrainedModel)}
    return list(configs.values())


# --- LoRA ---------------------------------------------------------------------------------------


def add_lora(model, lora, anatomy: Anatomy):
    """The model wrapped by peft: low-rank adapters on the target modules, the head and the
    backbone's top trained in full (``modules_to_save``), every other weight frozen."""
    import peft

    backbone = anatomy.require_backbone("train.lora")
    targets = lora.target_modules or default_lora_targets(backbone)
    peft_config = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        modules_to_save=fully_trained_modules(model, anatomy) or None,
    )
    try:
        return peft.get_peft_model(model, peft_config)
    except ValueError as exc:  # e.g. no module matched the targets
        reason = str(exc).strip().split(". ")[0].rstrip(".")
        names = targets if isinstance(targets, str) else ", ".join(targets)
        raise ConfigError(f"train.lora.target_modules: [{names}] in {type(backbone).__name__}: {reason}") from None


def default_lora_targets(backbone) -> list[str]:
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    model_type = getattr(backbone.config, "model_type", None)
    if model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
        raise ConfigError(f"train.lora.target_modules: peft has no default for model type '{model_type}'; name the modules to adapt, e.g. [q_proj, v_proj]")
    return TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type]


def fully_trained_modules(model, anatomy: Anatomy) -> list[str]:
    """Module paths LoRA trains and saves in full: the head (the model's children outside the
    backbone) and the backbone's top (pooler, final norm). The top is saved too because a
    checkpoint without it (a BERT saved for masked LM has no pooler) leaves it randomly
    initialised, and a saved adapter must reproduce the model without the training run's seed."""
    backbone = anatomy.backbone
    prefix = next(name for name, module in model.named_modules() if module is backbone)
    head = [name for name, child in model.named_children() if not _holds(child, backbone) and _has_parameters(child)]
    top = []
    for name, child in backbone.named_children():
        path = f"{prefix}.{name}" if prefix else name
        names = [f"{path}.{n}" for n, _ in child.named_parameters()]
        if names and all(anatomy.parts.get(n) == "top" for n in names):
            top.append(path)
    return head + top


def _holds(module, inner) -> bool:
    return any(m is inner for m in module.modules())


def _has_parameters(module) -> bool:
    return any(True for _ in module.parameters())


def is_peft_model(model) -> bool:
    peft = sys.modules.get("peft")  # nothing is a peft model before peft is imported: no import here
    return peft is not None and isinstance(model, peft.PeftModel)


def is_lora_model_dir(model_dir: Path) -> bool:
    return (Path(model_dir) / ADAPTER_CONFIG).is_file()
