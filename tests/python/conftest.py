"""Shared pytest fixtures: where ../shared lives, PNG support, a tiny LLaMA, deterministic seeds,
thread count."""
import os
import pathlib
import tempfile

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _shared_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("TESSERA_SHARED_DIR", ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session", autouse=True)
def temporary_files_under_pytest(tmp_path_factory):
    """tempfile's files, and those of the subprocesses (torchrun's torchelastic_* logs), go under
    pytest's own folder, which keeps the last three runs: in /tmp each run left hundreds."""
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("tmp"))
    tempfile.tempdir = None  # read TMPDIR again
    yield
    if before is None:
        os.environ.pop("TMPDIR")
    else:
        os.environ["TMPDIR"] = before
    tempfile.tempdir = None


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    d = _shared_dir()
    if not d.is_dir():
        pytest.skip(f"reference data folder {d} not found (set TESSERA_SHARED_DIR)")
    return d


@pytest.fixture(scope="session")
def fixture_dir(shared_dir):
    def get(family: str) -> pathlib.Path:
        d = shared_dir / "fixtures" / "hf" / family
        if not d.is_dir():
            pytest.skip(f"fixture {d} not found")
        return d

    return get


@pytest.fixture(scope="session")
def png_codec():
    """Skips what writes or reads PNG files on a build without OpenCV (JPEG still decodes there)."""
    from tessera import _C

    if not _C.data.drawing_available():
        pytest.skip("tessera was built without OpenCV: no PNG encoding or decoding")


@pytest.fixture(scope="module")
def shards(tmp_path_factory, png_codec):
    """230 Fashion-MNIST test images as 10 webdataset shards (test_webdataset, test_shard_read_ahead)."""
    from tessera.data.shards import fashion_mnist_samples, write_shards

    out = tmp_path_factory.mktemp("shards")
    return write_shards(str(out), fashion_mnist_samples("/usr/share/datasets/fashion-mnist", "test", limit=230),
                        maxcount=25, prefix="fm-")


@pytest.fixture(scope="module")
def lm():
    """A tiny random LLaMA (_tiny_llama.py) in eval mode, one per test module."""
    import tessera
    from _tiny_llama import LLAMA

    torch.manual_seed(0)
    return tessera.LlamaForCausalLM(LLAMA).eval()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _threads():
    """Puts torch's thread count back after each test (a trainer's setup sets its own): a worker
    runs file after file, and a later one would run on the count a test left."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def pytest_configure(config):
    # Under pytest-xdist (`-n N`) the workers share the cores: each takes its part, so that N
    # workers never run more compute threads than the machine has.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // workers))


# The files that take about a minute or more of `make test` (seconds on the 2-core CI VM, stop 53).
# They run first: pytest-xdist deals whole files (--dist loadfile) in collection order (the
# Makefile's --no-loadscope-reorder; xdist would order them by test count), so the short files
# fill in at the end and the workers finish together instead of one waiting on a late long file.
RUN_FIRST = ("test_train_distributed.py",  # 355
             "test_llava_task.py",  # 252
             "test_cpp_extension.py",  # 95
             "test_sugar_distributed.py",  # 72
             "test_chat_template.py",  # 65
             "test_pytorch_engines.py",  # 60
             "test_blip2_distributed.py",  # 55
             "test_plan_tasks.py")  # 52


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(RUN_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(RUN_FIRST)))  # stable: a file's own order kept
