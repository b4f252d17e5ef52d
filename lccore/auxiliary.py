"""The joint objective L = L_task + λ·L_lm (GPT-1's auxiliary language-modelling loss).

The model's own language-modelling head (masked LM for encoders, causal LM for decoders, as the
model type says) is put on the task model's backbone, sharing it, and scores the task's own input
text at every training step. In evaluation only the task runs. The saved model is the task model
alone: the LM head is a training aid.
"""

from __future__ import annotations

import torch

from .errors import ConfigError
from .finetuning import find_backbone


class JointModel(torch.nn.Module):
    """The task model plus an LM head model sharing its backbone; ``forward`` returns the task's
    outputs with ``lm_loss`` added while training."""

    def __init__(self, task_model, lm_model, objective: str, tokenizer):
        super().__init__()
        self.task_model = task_model
        self.lm_model = lm_model
        self.objective = objective
        self.special_ids = torch.tensor(tokenizer.all_special_ids)
        if objective == "mlm":
            from transformers import DataCollatorForLanguageModeling

            self.masker = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15)

    def forward(self, **batch):
        outputs = self.task_model(**batch)
        if self.training:
            outputs["lm_loss"] = self.lm_loss(batch)
        return outputs

    def lm_loss(self, batch: dict):
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if self.objective == "mlm":  # 80/10/10 masking of the task's input, as in pretraining
            special = torch.isin(input_ids, self.special_ids.to(input_ids.device)) | (attention_mask == 0)
            masked, labels = self.masker.torch_mask_tokens(input_ids.cpu().clone(), special.cpu())
            masked, labels = masked.to(input_ids.device), labels.to(input_ids.device)
        else:
            masked, labels = input_ids, input_ids.masked_fill(attention_mask == 0, -100)
        extra = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch and self.objective == "mlm" else {}
        return self.lm_model(input_ids=masked, attention_mask=attention_mask, labels=labels, **extra).loss

    def save_pretrained(self, directory, **kwargs):
        self.task_model.save_pretrained(directory, **kwargs)


def add_lm_objective(model, model_source: str, tokenizer):
    """Wrap ``model`` with its backbone's own LM head (loaded with its pretrained weights where the
    checkpoint has them)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    backbone = find_backbone(model)
    if backbone is None:
        raise ConfigError("train.aux_lm_weight: the model holds no transformers backbone to put an LM head on")
    config = AutoConfig.from_pretrained(model_source)
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        objective, auto = "mlm", AutoModelForMaskedLM
        if tokenizer.mask_token is None:
            raise ConfigError("train.aux_lm_weight: masked LM needs a tokenizer with a mask token")
    elif config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        objective, auto = "clm", AutoModelForCausalLM
    else:
        raise ConfigError(f"train.aux_lm_weight: model type '{config.model_type}' has no masked or causal LM head in transformers")
    lm_model = auto.from_pretrained(model_source)
    # Swap in the task model's backbone, then tie the output embeddings to its input embeddings.
    setattr(lm_model, lm_model.base_model_prefix, backbone)
    lm_model.tie_weights()
    return JointModel(model, lm_model, objective, tokenizer)
