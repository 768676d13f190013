"""Checkpoints you can trust: a run folder someone else wrote never runs code, a damaged file is
named and `--resume` falls back to the newest intact checkpoint, a folder of another task is
refused, two runs cannot share a folder, and a full disk leaves the previous checkpoint intact."""
import contextlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
import types

import pytest
import torch

import tessera
from tessera.checksums import MANIFEST, CheckpointDamaged, verify_checkpoint, write_manifest
from tessera.train import Trainer, build_task, recipe_from_dict
from tessera.train.checkpoint import CheckpointWriteError, check_eval_checkpoint, list_checkpoints
from tessera.train.run_lock import RunFolderLocked, RunLock
from tessera.train.safe_dcp import SafeFileSystemReader, SafeLoadPlanner, load_metadata_file

sys.path.insert(0, os.path.dirname(__file__))
import _toy_task  # noqa: E402,F401  (registers toy_regression)
from _toy_task import ToyModel, ToyRegression  # noqa: E402
from tessera.train import register_task  # noqa: E402


@register_task("toy_other")
class ToyOther(ToyRegression):
    """The same model under another task name: a run folder of one is not the other's."""


def toy(steps=4, task="toy_regression", dim=8):
    return recipe_from_dict({
        "task": task, "data": {"samples": 64, "batch_size": 8, "dim": dim},
        "optim": {"lr": 0.05, "warmup_fraction": 0.0},
        "train": {"plots": False, "steps": steps, "log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 3, "threads": 1}})


def fit(out, resume=False, **kw):
    recipe = toy(**kw)
    return Trainer(recipe, build_task(recipe), str(out), progress=False).fit(resume=resume)


def step_dir(out, step):
    return out / "checkpoints" / f"step-{step:08d}"


class RunsCode:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def flip_byte(path, where=0.5):
    data = bytearray(path.read_bytes())
    i = int(len(data) * where)
    data[i] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def run4(tmp_path_factory):
    """An uninterrupted 4-step toy run (checkpoints at steps 2 and 4), copied by each test."""
    out = tmp_path_factory.mktemp("trust") / "run"
    fit(out)
    return out


@pytest.fixture
def run(run4, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run4, out)
    return out


def test_checkpoint_lists_every_file_with_its_checksum(run):
    ckpt = step_dir(run, 4)
    manifest = json.loads((ckpt / MANIFEST).read_text())
    on_disk = sorted(os.path.relpath(os.path.join(d, f), ckpt) for d, _, fs in os.walk(ckpt) for f in fs
                     if f != MANIFEST)
    assert manifest["algorithm"] == "sha256" and sorted(manifest["files"]) == on_disk
    assert {"dcp/.metadata", "dcp/__0_0.distcp", "model.safetensors", "trainer_state.pt", "recipe.json"} <= set(on_disk)
    assert verify_checkpoint(str(ckpt))


def test_poisoned_dcp_metadata_never_runs_code(run, tmp_path):
    marker = tmp_path / "pwned"
    metadata = step_dir(run, 4) / "dcp" / ".metadata"
    metadata.write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(ValueError, match=r"dcp/\.metadata: refused to load: it asks to import (posix|os)\.system"):
        load_metadata_file(str(metadata))
    # Resume: the checksum catches it first and the run falls back to step 2 ...
    fit(run, resume=True)
    assert (run / "checkpoints" / "damaged-step-00000004").is_dir()
    # ... and with a manifest rewritten to match (a folder made to look intact), it is refused.
    metadata = step_dir(run, 4) / "dcp" / ".metadata"
    metadata.write_bytes(pickle.dumps(RunsCode(marker)))
    write_manifest(str(step_dir(run, 4)))
    with pytest.raises(ValueError, match=r"step-00000004/dcp/\.metadata: refused to load"):
        fit(run, resume=True)
    assert not marker.exists()


def test_non_tensor_items_of_a_dcp_shard_never_run_code(tmp_path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    marker = tmp_path / "pwned"
    with contextlib.redirect_stderr(io.StringIO()), pytest.warns(UserWarning):
        dcp.save({"x": RunsCode(marker), "w": torch.ones(2)}, checkpoint_id=str(tmp_path / "dcp"))
        target = {"x": None, "w": torch.zeros(2)}
        with pytest.raises(CheckpointException, match="refused to load the item 'x'"):
            dcp.load(target, storage_reader=SafeFileSystemReader(str(tmp_path / "dcp")), planner=SafeLoadPlanner())
    assert not marker.exists()


@pytest.mark.parametrize("damaged", ["dcp/__0_0.distcp", "model.safetensors", "trainer_state.pt"])
def test_a_flipped_byte_is_named_and_resume_falls_back(run, damaged, capsys):
    expected = {k: v.clone() for k, v in tessera.models.weights.load_weights(str(step_dir(run, 4))).items()}
    flip_byte(step_dir(run, 4) / damaged)
    with pytest.raises(CheckpointDamaged, match=rf"step-00000004/{damaged}: checksum mismatch \(expected sha256 "):
        verify_checkpoint(str(step_dir(run, 4)))
    capsys.readouterr()
    fit(run, resume=True)
    said = capsys.readouterr().out
    assert f"skipping {step_dir(run, 4)}: {step_dir(run, 4)}/{damaged}: checksum mismatch" in said
    assert f"falling back to {step_dir(run, 2)}" in said
    assert f"resume: continuing from {step_dir(run, 2)} (step 2 of " in said  # also without a progress bar
    assert (run / "checkpoints" / "damaged-step-00000004" / damaged).is_file()  # kept aside for a look
    # Resumed from step 2, the run wrote step 4 again: bitwise the uninterrupted run's weights.
    again = tessera.models.weights.load_weights(str(step_dir(run, 4)))
    assert all(torch.equal(expected[k], again[k]) for k in expected)


def test_truncated_file_and_damaged_manifest_are_named(run):
    ckpt = step_dir(run, 4)
    state = ckpt / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:-10])
    with pytest.raises(CheckpointDamaged, match=r"trainer_state.pt: size mismatch"):
        verify_checkpoint(str(ckpt))
    manifest = step_dir(run, 2) / MANIFEST
    manifest.write_text(manifest.read_text().replace('"size": ', '"size": 1', 1))
    with pytest.raises(CheckpointDamaged, match=rf"{MANIFEST}: the checksum manifest does not match its own digest"):
        verify_checkpoint(str(step_dir(run, 2)))
    with pytest.raises(CheckpointDamaged, match="no intact checkpoint to resume: all 2 are damaged"):
        fit(run, resume=True)


def test_a_checkpoint_without_checksums_resumes_with_a_warning(run):
    for step in (2, 4):
        os.remove(step_dir(run, step) / MANIFEST)
    with pytest.warns(UserWarning, match="has no checksums.json"):
        summary = fit(run, resume=True, steps=6)
    assert summary["train_steps"] == 6


def test_from_pretrained_checks_a_checkpoint_folder_but_loads_plain_hf_folders(fixture_dir, tmp_path):
    folder = tmp_path / "llama"
    shutil.copytree(fixture_dir("llama"), folder)
    tessera.from_pretrained(str(folder))  # no manifest: a plain HF folder
    write_manifest(str(folder))
    tessera.from_pretrained(str(folder))
    flip_byte(folder / "model.safetensors", 0.9)
    with pytest.raises(CheckpointDamaged, match=r"llama/model.safetensors: checksum mismatch"):
        tessera.from_pretrained(str(folder))


def test_a_run_folder_of_another_task_is_refused(run):
    with pytest.raises(ValueError, match=rf"{run} was written by task 'toy_regression' \(step-00000004\); this "
                                         r"recipe is task 'toy_other': use another --out"):
        fit(run, resume=True, task="toy_other")
    with pytest.raises(ValueError, match="was written by task 'toy_regression'.*or pass --overwrite"):
        fit(run, task="toy_other")  # nor overwritten afresh without a word
    assert len(list_checkpoints(str(run))) == 2
    other = toy(steps=2, task="toy_without_norm")  # what --overwrite is for, whatever wrote the folder
    assert Trainer(other, build_task(other), str(run), progress=False).fit(overwrite=True)["train_steps"] == 2
    assert [os.path.basename(c) for c in list_checkpoints(str(run))] == ["step-00000002"]


def test_eval_of_another_model_is_one_line(run, tmp_path, capsys):
    recipe = tmp_path / "other.yaml"
    recipe.write_text(json.dumps({"task": "toy_regression", "data": {"dim": 4}}))
    argv = ["eval", str(run), "--recipe", str(recipe)]
    assert tessera.cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "its tensors do not fit ToyModel: 4 of another shape (proj.weight [" in err
    assert err.count("the model's [") == 3 and "... 1 more)" in err
    recipe.write_text(json.dumps({"task": "toy_other", "data": {}}))
    assert tessera.cli.main(argv) == 2
    assert "was written by task 'toy_regression'; this recipe is task 'toy_other'" in capsys.readouterr().err
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    clip = types.SimpleNamespace(model_class=tessera.models.clip.CLIPModel, recipe=types.SimpleNamespace(task="clip"))
    with pytest.raises(ValueError, match=r"holds a 'llama' model \(LlamaForCausalLM\); recipe task 'clip' evaluates "
                                         r"'clip' models \(CLIPModel\)"):
        check_eval_checkpoint(str(llama), clip)


def test_two_runs_cannot_share_a_run_folder(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from tessera.train.run_lock import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t = time.time()
        with pytest.raises(RunFolderLocked, match=rf"{out} is in use by another training run \(pid {holder.pid} on "):
            fit(out)
        assert time.time() - t < 5
    finally:
        holder.kill()  # SIGKILL: the kernel drops the flock with the process
        holder.wait()
    RunLock(str(out)).acquire().release()


def _fill(folder, leave):
    free = shutil.disk_usage(folder).free
    with open(os.path.join(folder, "filler"), "wb") as f:
        f.write(b"\0" * max(0, free - leave))


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (as root), else None: the test simulates ENOSPC instead."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(small_disk, tmp_path, monkeypatch):
    out = (small_disk or tmp_path) / "run"
    fit(out, steps=2)
    if small_disk is not None:
        _fill(str(small_disk), leave=8192)  # a real full disk: DCP's shard write fails
    else:  # no mount permitted: the C++ writer reports what a full disk makes it report
        def full(path, data):
            raise RuntimeError(f"cannot write {path}: No space left on device")
        monkeypatch.setattr(tessera._C.core, "write_file_atomic", full)
    with pytest.raises(CheckpointWriteError, match=rf"{out}/checkpoints: disk full while writing checkpoint "
                                                   r"step-00000004 \(.* free; the previous checkpoint takes .*\); the "
                                                   rf"partial checkpoint was removed and {step_dir(out, 2)} is intact"):
        fit(out, resume=True, steps=4)
    assert os.listdir(out / "checkpoints") == ["step-00000002"]
    assert verify_checkpoint(str(step_dir(out, 2)))


def test_a_torn_metrics_line_does_not_stop_a_resume(run, capsys):
    """metrics.jsonl is appended, so a crash can tear its last line: resume refused with the JSON
    parser's message (no file), and a list or a string step crashed with a traceback."""
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'[1, 2]\n{"step": "x"}\n\xff\xfe\n{"step": 3, "loss": 1')
    fit(run, resume=True, steps=6)
    assert "dropped 4 row(s)" in capsys.readouterr().err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(isinstance(r["step"], int) for r in rows) and max(r["step"] for r in rows) == 6


@pytest.mark.parametrize("edit, message", [
    (lambda s: [s], "not a tessera trainer state"),
    (lambda s: {k: v for k, v in s.items() if k != "format_version"}, "not a tessera trainer state"),
    (lambda s: {**s, "step": -5}, "step must be an integer >= 0"),
    (lambda s: {**s, "step": "4"}, "step must be an integer >= 0"),
    (lambda s: {**s, "world_size": 0}, "world_size must be an integer >= 1"),
    (lambda s: {k: v for k, v in s.items() if k != "scheduler"}, "scheduler must be"),
    (lambda s: {**s, "data": []}, "data must be a non-empty list"),
    (lambda s: {**s, "rng": [[]]}, "rng must be a non-empty list"),
    (lambda s: {**s, "scheduler": {}}, r"trainer_state.pt: scheduler cannot be restored \(KeyError"),
    (lambda s: {**s, "rng": [{}]}, r"trainer_state.pt: rng\[0\] cannot be restored \(KeyError: 'torch'"),
    (lambda s: {**s, "rng": [{"torch": torch.zeros(3, dtype=torch.uint8), "python": (3, (), None)}]},
     r"rng\[0\] cannot be restored \(RuntimeError"),
])
def test_an_edited_trainer_state_is_refused_by_field(run, edit, message):
    """A state edited and re-signed (its checksums rewritten) trained from step -5, or failed with
    KeyError/IndexError/AttributeError (or torch's RNG size error) deep in the resume."""
    ckpt = step_dir(run, 4)
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    torch.save(edit(state), ckpt / "trainer_state.pt")
    write_manifest(str(ckpt))
    with pytest.raises(ValueError, match=message):
        fit(run, resume=True, steps=6)


def test_resume_without_a_checkpoint_says_it_starts_over(tmp_path, capsys):
    fit(tmp_path / "typo", resume=True, steps=2)
    assert "holds no checkpoint yet; starting at step 0" in capsys.readouterr().out


@register_task("toy_without_norm")
class ToyWithoutNorm(ToyRegression):
    """The same task with a smaller model (no norm): its run must not resume a larger model's."""

    def build_model(self):
        model = ToyModel(self.recipe.data.dim)
        model.norm = torch.nn.Identity()
        return model


def test_resume_refuses_a_checkpoint_holding_tensors_the_model_lacks(run):
    """DCP loads only the keys asked for: a smaller model trained on part of a larger one's
    checkpoint and pruned the rest away, without a word."""
    recipe = toy(steps=6, task="toy_regression")
    task = ToyWithoutNorm(recipe)
    with pytest.raises(ValueError, match=r"holds 2 model tensor\(s\) this model lacks \(norm.bias, norm.weight\)"):
        Trainer(recipe, task, str(run), progress=False).fit(resume=True)
    assert len(list_checkpoints(str(run))) == 2  # nothing pruned


def test_a_fresh_run_over_an_earlier_run_needs_resume_or_overwrite(run):
    """Without --resume a new run pruned the earlier run's checkpoints one by one and left both mixed."""
    with pytest.raises(ValueError, match=r"holds checkpoints of an earlier run \(newest step-00000004\): pass "
                                         r"--resume to continue it, or --overwrite"):
        fit(run, steps=2)
    assert [os.path.basename(c) for c in list_checkpoints(str(run))] == ["step-00000002", "step-00000004"]
    recipe = toy(steps=2)
    with pytest.raises(ValueError, match="give one"):
        Trainer(recipe, build_task(recipe), str(run), progress=False).fit(resume=True, overwrite=True)
    Trainer(recipe, build_task(recipe), str(run), progress=False).fit(overwrite=True)
    assert [os.path.basename(c) for c in list_checkpoints(str(run))] == ["step-00000002"]


@pytest.mark.parametrize("files, message", [
    ([], "'files' is a list"),
    ({"recipe.json": 5}, "entry 'recipe.json' is not a path inside the checkpoint"),
    ({"recipe.json": {"size": 3}}, "entry 'recipe.json' is not a path inside"),
    ({"../../etc/hostname": {"size": 1, "sha256": "0" * 64}}, "entry '../../etc/hostname' is not a path inside"),
    ({}, "present but not listed in the checkpoint's checksums.json"),
])
def test_a_re_signed_manifest_of_another_shape_is_damage(run, files, message, capsys):
    """Re-signed (its own digest recomputed), such a manifest failed with TypeError/KeyError, read a
    file outside the checkpoint, or (empty) vouched for nothing while the resume went on."""
    from tessera.checksums import _listing_digest

    ckpt = step_dir(run, 4)
    doc = {"algorithm": "sha256", "files": files, "manifest_sha256": _listing_digest(files)}
    (ckpt / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(CheckpointDamaged, match=message):
        verify_checkpoint(str(ckpt), required=["trainer_state.pt"])
    assert fit(run, resume=True, steps=6)["train_steps"] == 6  # from step 2, the newest intact one
    assert "falling back to" in capsys.readouterr().out


def test_a_file_resume_does_not_read_is_named_not_damage(run, capsys):
    """A tokenizer saved beside the weights made the newest checkpoint "damaged": moved aside, and
    its steps trained again from the one before."""
    (step_dir(run, 4) / "tokenizer_config.json").write_text("{}")
    with pytest.warns(UserWarning, match=r"1 file\(s\) not in its checksums.json, not read on resume: "
                                         r"tokenizer_config.json"):
        assert fit(run, resume=True, steps=6)["train_steps"] == 6
    assert "falling back to" not in capsys.readouterr().out
    assert not any("damaged" in os.path.basename(c) for c in os.listdir(run / "checkpoints"))


def test_every_reader_of_model_weights_checks_the_manifest(fixture_dir, tmp_path):
    """`init.*`, a teacher and create_model(pretrained=) read through load_weights, which read a
    damaged checkpoint that from_pretrained refused."""
    from tessera.models.weights import load_weights

    folder = tmp_path / "llama"
    shutil.copytree(fixture_dir("llama"), folder)
    write_manifest(str(folder))
    assert load_weights(folder) and tessera.from_pretrained(folder)  # a pathlib.Path as transformers takes it
    flip_byte(folder / "model.safetensors", 0.9)
    with pytest.raises(CheckpointDamaged, match=r"llama/model.safetensors: checksum mismatch"):
        load_weights(str(folder))


def test_a_truncated_shard_is_named(run):
    ckpt = step_dir(run, 4)
    shard = next((ckpt / "dcp").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:100])
    os.remove(ckpt / MANIFEST)  # no checksums to name it first
    with pytest.warns(UserWarning, match="has no checksums.json"), \
            pytest.raises(ValueError, match=rf"{shard.name}: 100 bytes, but the checkpoint's .metadata places items"):
        fit(run, resume=True, steps=6)


@pytest.mark.parametrize("where", ["out", "checkpoints"])
def test_a_run_folder_that_is_not_a_folder_is_refused_before_training(tmp_path, where):
    out = tmp_path / "run"
    target = out if where == "out" else out / "checkpoints"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, target)  # a link to itself: exists, resolves nowhere
    with pytest.raises(ValueError, match=rf"{target.name} exists but is not a folder"):
        fit(out, resume=True, steps=2)


def test_a_resume_names_the_recipe_fields_that_changed(run, capsys):
    """A new learning rate on resume was ignored without a word (the scheduler's saved base rates win)."""
    recipe = toy(steps=6)
    recipe.optim.lr = 0.5
    Trainer(recipe, build_task(recipe), str(run), progress=False).fit(resume=True)
    out = capsys.readouterr().out
    assert "resume: the recipe differs from the one step-00000004 was trained with" in out
    assert "optim.lr: 0.05 -> 0.5" in out and "train.steps: 4 -> 6" in out and "does not take effect" in out


def test_eval_without_a_recipe_uses_the_checkpoints_own(run, tmp_path, capsys):
    """`tessera eval RUN` evaluates with the recipe the run was trained with (its recipe.json: data,
    never code); a folder without one asks for --recipe by name."""
    assert tessera.cli.main(["eval", str(run)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    recipe = tmp_path / "same.json"
    recipe.write_text((step_dir(run, 4) / "recipe.json").read_text())
    assert tessera.cli.main(["eval", str(run), "--recipe", str(recipe)]) == 0
    assert json.loads(capsys.readouterr().out) == metrics and metrics
    bare = tmp_path / "bare"
    shutil.copytree(step_dir(run, 4), bare)
    (bare / "recipe.json").unlink()
    assert tessera.cli.main(["eval", str(bare)]) == 2
    assert "no recipe.json beside the weights" in capsys.readouterr().err


def test_a_fifo_in_place_of_any_file_of_a_run_folder_is_named_not_waited_on(run, tmp_path):
    """A run folder is written by others too: metrics.jsonl replaced by a FIFO blocked `--resume`
    in open() forever (a link to /dev/zero read until memory ran out). Every file a resume reads is
    put in turn as a FIFO; a resume either goes on or names the file, and never waits on it (a
    watchdog opens the FIFO's other end when a reader is stuck, and records that it had to)."""
    import threading

    newest = step_dir(run, 4)
    rels = ["metrics.jsonl"] + [os.path.relpath(os.path.join(d, f), run) for d, _, fs in os.walk(newest) for f in fs]
    stuck = []
    for rel, manifest in [(r, m) for r in rels for m in (True, False)]:  # and as an older tessera wrote it
        out = tmp_path / f"{rel.replace('/', '_')}-{manifest}"
        shutil.copytree(run, out)
        if not manifest:
            for d in out.glob("checkpoints/step-*"):
                (d / MANIFEST).unlink()
            if rel.endswith(MANIFEST):
                continue
        fifo = out / rel
        fifo.unlink()
        os.mkfifo(fifo)
        done = threading.Event()

        def watchdog(fifo=fifo, rel=rel, manifest=manifest, done=done):
            while not done.wait(0.5):
                try:  # succeeds only while a reader waits on the FIFO
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                    stuck.append((rel, manifest))
                except OSError:
                    pass
        thread = threading.Thread(target=watchdog, daemon=True)
        thread.start()
        try:
            with pytest.warns(UserWarning) if not manifest else contextlib.nullcontext():
                fit(out, resume=True)
        except Exception as e:  # noqa: BLE001 - any clear error is fine; it must name the file
            assert os.path.basename(rel) in str(e), (rel, e)
        finally:
            done.set()
            thread.join()
    assert not stuck, f"a resume waited on a FIFO in place of {stuck}"  # (file, manifest present)
