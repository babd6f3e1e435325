import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_sd():
    """The embedded, trained tiny-sd on the CPU in fp32."""
    from course_lib import load_pipeline
    return load_pipeline("tiny-sd", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def random_tiny():
    from course_lib.testing import random_pipeline
    return random_pipeline("tiny-sd")
