"""The processor of a transformers VLM: AutoProcessor, or assembled when torchvision is absent.

Without torchvision `AutoProcessor` refuses families that have a video processor; the image
path needs none, so we build the family's processor from its image processor, tokenizer and
chat template (identical ids), and refuse video input with a clear message.
"""

from __future__ import annotations

import inspect
import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

from cadence.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

# model_type → family name used by the token-cost models (cadence.video.tokens).
FAMILY_OF_MODEL_TYPE = {
    "idefics3": "idefics3", "smolvlm": "idefics3", "qwen2_vl": "qwen2_vl",
    "qwen2_5_vl": "qwen2_vl", "llava_onevision": "llava_onevision", "mllama": "mllama",
}
VIDEO_REFUSED = (
    "video input needs the model's video processor, which needs torchvision (not installed); "
    "cadence sends sampled frames as images instead — install torchvision for native video"
)


@cache
def _image_only_class(class_name: str) -> type:
    """The family's processor class minus its video processor (see module docstring)."""
    import transformers

    base = getattr(transformers, class_name, None)
    if base is None:
        raise ModelError(f"transformers has no processor class {class_name!r}; upgrade it")
    params = inspect.signature(base.__init__).parameters
    if "video_processor" not in params:
        return base  # nothing to remove (Idefics3, Mllama)

    def __init__(self: Any, image_processor: Any = None, tokenizer: Any = None,
                 chat_template: str | None = None, **kwargs: Any) -> None:
        # ProcessorMixin zips positional args with get_attributes() (from this signature),
        # so the trailing None for video_processor is dropped rather than type-checked.
        base.__init__(self, image_processor, tokenizer, None, chat_template=chat_template,
                      **kwargs)

    def __call__(self: Any, *args: Any, videos: Any = None, **kwargs: Any) -> Any:
        if videos is not None:
            raise ModelError(VIDEO_REFUSED)
        return base.__call__(self, *args, **kwargs)

    # The base signature minus video_processor: get_attributes() and to_dict() read it, so
    # init kwargs such as image_seq_len are saved and loaded like the real processor's.
    sig = inspect.signature(base.__init__)
    __init__.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[p for p in sig.parameters.values() if p.name != "video_processor"])
    # Same name, so save_pretrained records the real class in processor_config.json.
    return type(class_name, (base,), {"__init__": __init__, "__call__": __call__,
                                      "__module__": __name__})


def assemble_processor(
    class_name: str, image_processor: Any, tokenizer: Any, chat_template: str | None,
    kwargs: dict[str, Any] | None = None,
) -> Any:
    """Build `class_name` from its parts; extra init kwargs (image_seq_len…) are filtered."""
    cls = _image_only_class(class_name)
    allowed = set(inspect.signature(cls).parameters)
    extra = {k: v for k, v in (kwargs or {}).items() if k in allowed}
    return cls(image_processor=image_processor, tokenizer=tokenizer,
               chat_template=chat_template, **extra)


def _processor_class_name(path: Path, model_type: str) -> str:
    cfg = path / "processor_config.json"
    if cfg.is_file():
        name = json.loads(cfg.read_text("utf-8")).get("processor_class")
        if isinstance(name, str):
            return name
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = PROCESSOR_MAPPING_NAMES.get(model_type)
    if not isinstance(name, str):
        raise ModelError(f"{path}: no processor class known for model type {model_type!r}")
    return name


def _chat_template(path: Path, tokenizer: Any) -> str | None:
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text("utf-8")
    legacy = path / "chat_template.json"
    if legacy.is_file():
        value = json.loads(legacy.read_text("utf-8")).get("chat_template")
        return value if isinstance(value, str) else None
    template = getattr(tokenizer, "chat_template", None)
    return template if isinstance(template, str) else None


def load_processor(path: str | Path, model_type: str) -> tuple[Any, bool]:
    """(processor, assembled?) for a local model directory."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    p = Path(path)
    try:
        return AutoProcessor.from_pretrained(p), False
    except (OSError, ImportError, ValueError, AttributeError, TypeError) as exc:
        # The usual cause: a video processor that needs torchvision. Assemble instead.
        log.info("AutoProcessor refused %s (%s); assembling the image-only processor", p, exc)
    class_name = _processor_class_name(p, model_type)
    try:
        image_processor = AutoImageProcessor.from_pretrained(p)
        tokenizer = AutoTokenizer.from_pretrained(p)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{p}: cannot load the image processor or tokenizer ({exc})") from None
    kwargs: dict[str, Any] = {}
    cfg = p / "processor_config.json"
    if cfg.is_file():
        kwargs = {k: v for k, v in json.loads(cfg.read_text("utf-8")).items()
                  if not isinstance(v, dict)}
    try:
        processor = assemble_processor(class_name, image_processor, tokenizer,
                                       _chat_template(p, tokenizer), kwargs)
    except ImportError as exc:  # SmolVLM's processor needs num2words
        raise ModelError(f"{p}: the {class_name} needs a package: {exc}") from None
    return processor, True


def image_token_of(processor: Any) -> tuple[str, int]:
    token = processor.image_token
    return token, int(processor.tokenizer.convert_tokens_to_ids(token))


def check_geometry(config: Any, processor: Any) -> None:
    """Processor and model must agree on the image geometry; nothing else checks it."""
    family = FAMILY_OF_MODEL_TYPE.get(config.model_type)
    if family is None:
        raise ConfigError(
            f"model type {config.model_type!r} is not a supported VLM family; supported: "
            f"{', '.join(sorted(FAMILY_OF_MODEL_TYPE))}"
        )
    ip, vc = processor.image_processor, config.vision_config
    problems: list[str] = []

    def same(what: str, a: Any, b: Any) -> None:
        if a != b:
            problems.append(f"{what}: processor {a!r} vs model {b!r}")

    _, token_id = image_token_of(processor)
    cfg_token = getattr(config, "image_token_id", None)
    if cfg_token is None:
        cfg_token = getattr(config, "image_token_index", None)
    same("image token id", token_id, cfg_token)
    if family == "qwen2_vl":
        same("patch size", ip.patch_size, vc.patch_size)
        same("merge size", ip.merge_size, vc.spatial_merge_size)
        same("temporal patch size", ip.temporal_patch_size, vc.temporal_patch_size)
        tc = config.text_config
        rope = tc.rope_parameters or {}
        section = rope.get("mrope_section")
        head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
        if section is not None:
            same("mrope sections (sum = head_dim/2)", sum(section), head_dim // 2)
    elif family == "idefics3":
        tile = ip.max_image_size["longest_edge"]
        same("tile size", tile, vc.image_size)
        seq = (vc.image_size // vc.patch_size) ** 2 // (config.scale_factor**2)
        same("image_seq_len", processor.image_seq_len, seq)
    elif family == "llava_onevision":
        size = ip.size
        side = size.get("height") or size.get("shortest_edge")
        same("image size", side, vc.image_size)
        same("num_image_tokens", processor.num_image_tokens, (vc.image_size // vc.patch_size) ** 2)
        same("grid pinpoints", [list(x) for x in ip.image_grid_pinpoints],
             [list(x) for x in config.image_grid_pinpoints])
        same("feature select strategy", processor.vision_feature_select_strategy,
             config.vision_feature_select_strategy)
        same("aspect ratio policy", processor.vision_aspect_ratio, config.vision_aspect_ratio)
    elif family == "mllama":
        same("tile size", ip.size.get("height"), vc.image_size)
        same("max tiles", ip.max_image_tiles, vc.max_num_tiles)
    if problems:
        raise ModelError(
            "the processor and the model disagree on image geometry (" + "; ".join(problems)
            + "); use the processor files that ship with this checkpoint"
        )


def render_prompt(processor: Any, messages: list[dict[str, Any]]) -> str:
    """The chat template rendered to text, with the generation prompt appended.

    Rendered through the tokenizer's template engine: some processors' own
    `apply_chat_template` reach for the video processor even for image-only chats.
    """
    template = processor.chat_template or getattr(processor.tokenizer, "chat_template", None)
    if not template:
        raise ModelError("this model ships no chat template; add chat_template.jinja beside it")
    text = processor.tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=True
    )
    return str(text)
