"""Tiny random-weight lerobot policies (SmolVLA, pi0, pi0.5), built offline in seconds from the real classes.

Needs the ``lerobot`` environment (``nox -s lerobot``). Nothing is downloaded:

* SmolVLA reads its VLM's config and processor from ``vlm_model_name``: :func:`smolvlm_folder` writes a tiny
  SmolVLM config and a processor whose tokenizer (a ``tokenizers`` WordLevel model) carries the special tokens
  SmolVLA asks for (``fake_image_token``, ``global_image_token``, ``image_token``, ``end_of_utterance_token``).
* pi0 / pi0.5 take their Gemma widths from ``get_gemma_config(variant)`` and build PaliGemma's SigLIP tower from
  transformers' defaults (So400m). The builders shrink both for the duration of construction only (the module
  functions are swapped back afterwards); the attention head count stays 8, as lerobot's training loop assumes.

Every policy takes two cameras (``observation.images.image``, ``observation.images.wrist_image``) and an 8-d state,
and emits 7-d actions in chunks of ``chunk`` steps, like LIBERO. :func:`batch` makes a matching random batch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from unittest import mock

import torch

CAMERAS = ("observation.images.image", "observation.images.image2")  # lerobot's LIBERO names
STATE_DIM, ACTION_DIM = 8, 7
WORDS = "pick up the put it in on open close drawer bowl plate black red white block top of and".split()
SPECIAL = ("<pad>", "<unk>", "<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>")


def word_tokenizer():
    """A WordLevel fast tokenizer with SmolVLM's image special tokens (ids 0-5) and a small word list."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate((*SPECIAL, *WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
    )


def smolvlm_folder(
    folder: str | Path | None = None,
    image_size: int = 64,
    text_layers: int = 4,
    text: dict | None = None,
    vision: dict | None = None,
    scale_factor: int = 2,
) -> Path:
    """Write a tiny SmolVLM config + processor into ``folder`` (a new temporary folder by default).

    ``text`` / ``vision``: config overrides (the SmolVLA benchmark builds the real-size SmolVLM2-500M shape)."""
    from transformers import SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    folder = Path(folder or tempfile.mkdtemp(prefix="ivra-smolvlm-"))
    tok = word_tokenizer()
    cfg = SmolVLMConfig(
        text_config=dict(
            model_type="llama",
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=text_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=512,
            pad_token_id=0,
        )
        | (text or {}),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=8,
        )
        | (vision or {}),
        scale_factor=scale_factor,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    cfg.save_pretrained(folder)
    size = {"longest_edge": image_size}
    images = SmolVLMImageProcessor(do_resize=False, do_image_splitting=False, max_image_size=size, size=size)
    patch = (vision or {}).get("patch_size", 8)
    n_tokens = (image_size // patch // scale_factor) ** 2
    SmolVLMProcessor(
        image_processor=images, tokenizer=tok, video_processor=SmolVLMVideoProcessor(), image_seq_len=n_tokens
    ).save_pretrained(folder)
    return folder


def _features(image_size: int):
    from lerobot.configs.types import FeatureType, PolicyFeature

    inputs = {k: PolicyFeature(FeatureType.VISUAL, (3, image_size, image_size)) for k in CAMERAS}
    inputs["observation.state"] = PolicyFeature(FeatureType.STATE, (STATE_DIM,))
    return inputs, {"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))}


def smolvla_policy(
    seed: int = 0,
    image_size: int = 64,
    chunk: int = 4,
    special_tokens: bool = False,
    vlm_folder: str | Path | None = None,
    execute: int | None = None,
    **config,
):
    """A tiny ``SmolVLAPolicy`` (4 VLM text layers of width 64, 2 SigLIP layers; 16 tokens per camera), chunks of
    ``chunk`` actions of which ``execute`` (default: all) are executed (``n_action_steps``).

    ``vlm_folder``: where the tiny SmolVLM config + processor are written (SmolVLA reads them at construction
    and its config keeps the path); a temporary folder by default."""
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    torch.manual_seed(seed)
    inputs, outputs = _features(image_size)
    cfg = SmolVLAConfig(
        vlm_model_name=str(smolvlm_folder(vlm_folder, image_size=image_size)),
        load_vlm_weights=False,
        num_vlm_layers=4,
        resize_imgs_with_padding=(image_size, image_size),
        add_image_special_tokens=special_tokens,
        chunk_size=chunk,
        n_action_steps=execute or chunk,
        num_steps=3,
        max_state_dim=STATE_DIM,
        max_action_dim=ACTION_DIM,
        device="cpu",
        input_features=inputs,
        output_features=outputs,
        **config,
    )
    return SmolVLAPolicy(cfg).eval()


def _pi_policy(kind: str, seed: int, image_size: int, chunk: int, execute: int | None = None, **config):
    if kind == "pi0":
        import lerobot.policies.pi0.modeling_pi0 as modeling
        from lerobot.policies.pi0.configuration_pi0 import PI0Config as Config
    else:
        import lerobot.policies.pi05.modeling_pi05 as modeling
        from lerobot.policies.pi05.configuration_pi05 import PI05Config as Config

    def gemma(variant: str):
        width = 64 if variant == "gemma_2b" else 32
        return modeling.GemmaConfig(
            width=width, depth=2, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16
        )

    real_paligemma = modeling.PaliGemmaForConditionalGenerationWithPiGemma

    def paligemma(config):
        vision = config.vision_config
        vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers = 32, 64, 2
        vision.num_attention_heads, vision.projection_dim = 2, config.text_config.hidden_size
        return real_paligemma(config=config)

    torch.manual_seed(seed)
    inputs, outputs = _features(image_size)
    with (
        mock.patch.object(modeling, "get_gemma_config", gemma),
        mock.patch.object(modeling, "PaliGemmaForConditionalGenerationWithPiGemma", paligemma),
    ):
        cfg = Config(
            image_resolution=(image_size, image_size),
            chunk_size=chunk,
            n_action_steps=execute or chunk,
            num_inference_steps=3,
            max_state_dim=STATE_DIM,
            max_action_dim=ACTION_DIM,
            device="cpu",
            input_features=inputs,
            output_features=outputs,
            **config,
        )
        policy = (modeling.PI0Policy if kind == "pi0" else modeling.PI05Policy)(cfg)
    return policy.eval()


def pi0_policy(seed: int = 0, image_size: int = 56, chunk: int = 4, execute: int | None = None, **config):
    """A tiny ``PI0Policy`` (Gemma width 64 / expert 32, 2 layers each; 2-layer SigLIP; 16 tokens per camera);
    ``chunk`` / ``execute`` as for :func:`smolvla_policy`."""
    return _pi_policy("pi0", seed, image_size, chunk, execute, **config)


def pi05_policy(seed: int = 0, image_size: int = 56, chunk: int = 4, execute: int | None = None, **config):
    """A tiny ``PI05Policy``, sized like :func:`pi0_policy`."""
    return _pi_policy("pi05", seed, image_size, chunk, execute, **config)


def batch(policy, batch_size: int = 2, seed: int = 0, lang_len: int = 5, cameras=CAMERAS) -> dict:
    """A random observation batch in the layout the policy's processors produce (images in [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    size = policy.config.input_features[CAMERAS[0]].shape[-1]
    out = {k: torch.rand(batch_size, 3, size, size, generator=g) for k in cameras}
    out["observation.state"] = torch.rand(batch_size, STATE_DIM, generator=g)
    out["observation.language.tokens"] = torch.randint(
        len(SPECIAL), len(SPECIAL) + len(WORDS), (batch_size, lang_len), generator=g
    )
    out["observation.language.attention_mask"] = torch.ones(batch_size, lang_len, dtype=torch.bool)
    return out


def noise(policy, batch_size: int = 2, seed: int = 0) -> torch.Tensor:
    """Flow-matching noise of the policy's chunk shape, fixed by ``seed`` (pass it to ``predict_action_chunk``)."""
    g = torch.Generator().manual_seed(seed)
    cfg = policy.config
    return torch.randn(batch_size, cfg.chunk_size, cfg.max_action_dim, generator=g)


def processors(policy, tokenizer=None):
    """lerobot's own pre/post-processor pipelines for a tiny policy (identity normalisation statistics). pi0's
    factory names PaliGemma's hub tokenizer: the word tokenizer stands in for it while the pipeline is built."""
    from lerobot.policies.factory import make_pre_post_processors

    tok = tokenizer or word_tokenizer()
    dims = {"observation.state": STATE_DIM, "action": ACTION_DIM}
    stats = {
        k: {"mean": torch.zeros(d), "std": torch.ones(d), "min": -torch.ones(d), "max": torch.ones(d),
            "q01": -torch.ones(d), "q99": torch.ones(d)}
        for k, d in dims.items()
    }  # fmt: skip
    with mock.patch("lerobot.processor.tokenizer_processor.AutoTokenizer.from_pretrained", return_value=tok):
        return make_pre_post_processors(policy.config, dataset_stats=stats)


def save_checkpoint(folder: str | Path, seed: int = 0, **kw) -> Path:
    """Save a tiny SmolVLA as a lerobot checkpoint folder (``config.json``, ``model.safetensors``, the tiny
    SmolVLM config in ``folder/smolvlm`` that its config points to, and its pre/post-processor pipelines), loadable
    with ``SmolVLAPolicy.from_pretrained(folder)`` like a real one. (pi0 / pi0.5 checkpoints cannot be tiny:
    their config names a Gemma variant whose sizes are fixed in lerobot's code; use the live object instead.)"""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    policy = smolvla_policy(seed, vlm_folder=folder / "smolvlm", **kw)
    pre, post = processors(policy)
    policy.save_pretrained(folder)
    pre.save_pretrained(folder)
    post.save_pretrained(folder)
    return folder
