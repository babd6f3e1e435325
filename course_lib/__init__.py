"""course_lib: the tested library behind the diffusion image-editing course.

Start with :func:`get_config` (model, device, dtype, CI setting) and :func:`load_pipeline`.
"""
import logging as _logging


class _LibraryNoise(_logging.Filter):
    """Drops the one log message of transformers that every course page would otherwise show in red:
    "`CLIPImageProcessor` requires torchvision (not installed); falling back to
    `CLIPImageProcessorPil`". The course's image processors work on PIL images, which is what the
    fallback is, and torchvision from PyPI does not install beside the CPU build of torch that the
    course uses; so the message says nothing a learner can act on. Every other message passes."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back to" not in record.getMessage()


_logging.getLogger("transformers.utils.import_utils").addFilter(_LibraryNoise())

from .config import CourseConfig, get_config  # noqa: E402
from .models import ModelNotAvailable, load_clip, load_pipeline  # noqa: E402

__all__ = ["CourseConfig", "get_config", "load_pipeline", "load_clip", "ModelNotAvailable"]
__version__ = "0.1.0"
