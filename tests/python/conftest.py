"""Shared fixtures: tiny SDAR checkpoints written once per test session, and the reference."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "tests" / "reference"))

from fixtures import SHAPES, write_sdar_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One float32 checkpoint per tiny shape (see fixtures.SHAPES), each with a different seed."""
    root = tmp_path_factory.mktemp("ckpt")
    return {name: write_sdar_checkpoint(root / name, seed=i, **shape)
            for i, (name, shape) in enumerate(SHAPES.items())}


@pytest.fixture(scope="session")
def tokenizer_checkpoint(tmp_path_factory) -> Path:
    """A tiny SDAR checkpoint with an offline-built tokenizer (no mask id in config.json)."""
    return write_sdar_checkpoint(tmp_path_factory.mktemp("tok") / "m", seed=11, with_tokenizer=True,
                                 mask_token_id=None, **SHAPES["gqa"])


def _cuda_count() -> int:
    from blockinfer import _C

    return _C.cuda_device_count()


requires_cuda = pytest.mark.skipif(_cuda_count() == 0, reason="no CUDA GPU visible (cudaGetDeviceCount reports none)")

# The devices the engine tests run on: the GPU half skips itself, visibly, where none is present.
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


# Every LLM made during a test must have all of its KV pages free once the test is over: no
# request may leak pages, whether it finished, failed validation or was aborted.
_live_llms: "weakref.WeakSet" = None


def pytest_configure(config):
    global _live_llms
    import weakref

    from blockinfer import LLM

    _live_llms = weakref.WeakSet()
    original_init = LLM.__init__

    def tracking_init(self, *args, **kwargs):
        # Tests run on the CPU unless they ask for a device: LLM's "auto" would pick a GPU.
        kwargs.setdefault("device", "cpu")
        if str(kwargs["device"]).startswith("cuda") and "gpu_memory_utilization" not in kwargs:
            # Many engines live at once in a test session: give each a small KV cache instead of
            # 90% of the free GPU memory.
            kwargs.setdefault("num_kv_pages", 4096)
        original_init(self, *args, **kwargs)
        _live_llms.add(self)

    LLM.__init__ = tracking_init


@pytest.fixture(autouse=True)
def all_kv_pages_free_after_test():
    yield
    for llm in list(_live_llms):
        assert llm.num_free_kv_pages == llm.num_kv_pages, "KV pages leaked by this test"
        assert not llm.engine.has_unfinished(), "a request was left unfinished by this test"
