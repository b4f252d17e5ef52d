"""Sharded and multi-process training: what lccore adds to Accelerate's FSDP2 and refuses of DeepSpeed.

Accelerate (1.16) applies FSDP only on GPUs; :func:`fsdp2_on_cpu` applies an FSDP2 config to CPU
processes too, so the sharded path runs (and is tested) on any machine. Evaluation and saving
need the whole weights: :func:`whole_model` gathers them into a plain copy of the model.
"""

from __future__ import annotations

import contextlib
import os
import sys

from .errors import ConfigError


def refuse_deepspeed() -> None:
    """DeepSpeed (an Accelerate config with ``distributed_type: DEEPSPEED``) is refused before it
    starts: under ZeRO each process holds a partition of the optimiser's state (and under ZeRO-3 of
    the weights), which lccore's checkpoints, evaluation and saved model would take for the whole.
    FSDP2 shards the same way (ZeRO-3 is FSDP's full sharding) and is what lccore runs."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise ConfigError(
            "the Accelerate config asks for DeepSpeed (distributed_type: DEEPSPEED), which lccore does not run: its checkpoints "
            "and saved model would hold one process's partition of ZeRO's state; use FSDP2 instead, which shards as ZeRO-3 does "
            "(examples/distributed/fsdp2.yaml, docs/runs.md)"
        )


def fsdp2_on_cpu(accelerator) -> None:
    """Apply an Accelerate config's FSDP2 to CPU processes. Accelerate (1.16) applies FSDP only to
    processes on GPUs and would train these data-parallel; torch's ``fully_shard`` shards over gloo
    as well, so lccore sets the state Accelerate sets on GPUs (FSDP1 is left to the warning below)."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true" or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables `accelerate launch` sets
    if plugin.fsdp_version != 2:
        return
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    # AcceleratorState only: PartialState keeps MULTI_CPU, which a later make_accelerator starts from
    accelerator.state.fsdp_plugin, accelerator.state.distributed_type = plugin, DistributedType.FSDP


def fsdp2_layers(plugin, model) -> None:
    """The layers FSDP2 shards one by one (``fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP`` without
    a list): the model's ``_no_split_modules`` less those holding the input embeddings. Accelerate
    (1.16) shards the input embeddings on their own, and fails ("Invariant encountered: value was
    None") when a layer already holds them, such as BERT's ``BertEmbeddings``."""
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    if plugin.auto_wrap_policy is not transformer_auto_wrap_policy or plugin.transformer_cls_names_to_wrap is not None:
        return
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    holding = {type(module).__name__ for module in model.modules() if embeddings is not None and embeddings in module.modules()}
    present = {type(module).__name__ for module in model.modules()}
    plugin.transformer_cls_names_to_wrap = [name for name in getattr(model, "_no_split_modules", None) or () if name in present and name not in holding]


def meta_copy(model):
    """A copy of ``model`` whose parameters are placeholders on the meta device (no memory, no
    data; buffers are copied): what :func:`whole_model` fills."""
    import copy

    import torch

    memo = {id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad) for p in model.parameters()}
    return copy.deepcopy(model, memo)


@contextlib.contextmanager
def whole_model(model, skeleton):
    """``model``, or under FSDP2 a plain copy of it holding its whole weights. FSDP2 leaves each
    process a shard of every parameter: a forward gathers them with every other process, and
    ``state_dict()`` gives the shards. Evaluation runs its own chunks in each process, and saving
    writes a Hugging Face folder, so both use a copy of ``skeleton`` (:func:`meta_copy`) filled
    with the gathered weights; every process must enter (the weights are gathered collectively)."""
    from torch.distributed.fsdp import FSDPModule

    if skeleton is None or not isinstance(model, FSDPModule):
        yield model
        return
    import copy

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    for name, tensor in state.items():  # a gathered tensor may be a view of a padded buffer: safetensors refuses those
        state[name] = tensor.clone()
    plain = copy.deepcopy(skeleton)
    plain.load_state_dict(state, assign=True)
    yield plain


def fsdp_not_applied(accelerator) -> str | None:
    """Why an Accelerate config that asks for FSDP is not what runs, or None. Accelerate applies
    FSDP only to processes on accelerators (GPUs and the like); on CPU processes lccore applies
    FSDP2 (:func:`fsdp2_on_cpu`), and FSDP1 would train plain data-parallel without a word."""
    running = getattr(accelerator.distributed_type, "value", accelerator.distributed_type)  # DistributedType is a str enum
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true" or running == "FSDP":
        return None
    return (f"the Accelerate config asks for FSDP (fsdp_version {os.environ.get('FSDP_VERSION', '1')}), but Accelerate applies it only on GPUs "
            f"and lccore on CPU processes only fsdp_version 2; these {accelerator.num_processes} CPU process(es) train data-parallel "
            f"({running}), each holding the whole model")


@contextlib.contextmanager
def shard_tied_together(accelerator, model, optimizer):
    """Around ``accelerator.prepare``: parameters tied across the embeddings and another module go
    into one FSDP2 group first. Accelerate (1.16) groups the input and output embeddings, and torch
    refuses a parameter seen by two groups ("is shared with a parameter already managed by another
    FSDP group"): BERT's masked-LM head ties its decoder's bias to its own ``bias`` as well as the
    decoder's weight to the word embeddings, so masked-LM pretraining failed. While Accelerate
    shards the rest, the model shows it no output embeddings (they are sharded already)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    embeddings = [m for m in (getattr(model, "get_input_embeddings", lambda: None)(), getattr(model, "get_output_embeddings", lambda: None)()) if m is not None]
    owners: dict[int, list] = {}  # a parameter's id -> the modules that register it
    for module in model.modules():
        for param in module.parameters(recurse=False):
            owners.setdefault(id(param), []).append(module)
    group = list(embeddings)
    for module in group:  # grows: the owners of any parameter a member shares
        for param in module.parameters(recurse=False):
            group += [owner for owner in owners[id(param)] if not any(owner is member for member in group)]
    if len(group) == len(embeddings):  # the ties Accelerate handles (or none)
        yield
        return
    plugin = accelerator.state.fsdp_plugin
    mesh = getattr(accelerator, "torch_device_mesh", None)
    before = dict(model.named_parameters(remove_duplicate=False))
    fully_shard(group, reshard_after_forward=False, offload_policy=plugin.cpu_offload, mp_policy=plugin.mixed_precision_policy or MixedPrecisionPolicy(),
                mesh=mesh[tuple(accelerator.parallelism_config.fsdp_dim_names)] if mesh is not None else None)
    # the optimiser (built on the plain parameters, no state yet) takes the sharded ones, as Accelerate does for the rest
    sharded = {id(before[name]): param for name, param in model.named_parameters(remove_duplicate=False)}
    for param_group in optimizer.param_groups:
        param_group["params"] = [sharded.get(id(param), param) for param in param_group["params"]]
    model.get_output_embeddings = lambda: None  # an instance attribute over the class's method, for Accelerate's grouping
    try:
        yield
    finally:
        del model.get_output_embeddings


def end_with_launcher() -> None:
    """A process that torchrun (or ``accelerate launch``) started stops when its launcher dies.
    Without this, a launcher killed with SIGKILL (a job scheduler's hard stop, an OOM kill)
    leaves its workers training on as orphans, holding the run directory's lock, so ``--resume``
    is refused until they finish. The kernel sends SIGTERM (``PR_SET_PDEATHSIG``; not SIGINT,
    which a job script's background launch ignores); it ends the run as Ctrl-C would: one line,
    the scratch files removed. Linux only."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    def interrupt(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the clean-up is not interrupted again
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    launcher = os.getppid()
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != launcher:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
