"""course_lib: the tested library behind the diffusion image-editing course.

Start with :func:`get_config` (model, device, dtype, CI setting) and :func:`load_pipeline`.
"""
from .config import CourseConfig, get_config
from .models import ModelNotAvailable, load_clip, load_pipeline

__all__ = ["CourseConfig", "get_config", "load_pipeline", "load_clip", "ModelNotAvailable"]
__version__ = "0.1.0"
