"""transformers' Trainer driving a tessera LlamaForCausalLM, side by side with transformers' own
on the same folder and arguments: gradient accumulation over micro-batches holding different
numbers of target tokens (Trainer's num_items_in_batch) and gradient checkpointing. Trainer
failed to build (it sets config.use_cache), refused checkpointing's arguments, and averaged each
micro-batch's mean loss (weights 4.6e-3 apart after 4 steps)."""
from __future__ import annotations

import pytest
import torch

import tessera

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")


def _data():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 1000, (8, 16), generator=g)
    rows = []
    for row, keep in zip(ids, [16, 3, 16, 5, 4, 16, 2, 16]):  # real tokens per row; the rest padded
        labels = row.clone()
        labels[keep:] = -100
        mask = (torch.arange(16) < keep).long()
        rows.append({"input_ids": row, "attention_mask": mask, "labels": labels})
    return rows


def _train(model, out_dir, checkpointing):
    args = transformers.TrainingArguments(
        output_dir=str(out_dir), use_cpu=True, seed=0, max_steps=4, per_device_train_batch_size=1,
        gradient_accumulation_steps=2, learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[],
        disable_tqdm=True, gradient_checkpointing=checkpointing)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_data())
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_trainer_trains_tessera_as_transformers(fixture_dir, tmp_path, checkpointing):
    d = str(fixture_dir("llama"))
    ours, theirs = tessera.from_pretrained(d), transformers.LlamaForCausalLM.from_pretrained(d)
    before = {k: v.detach().clone() for k, v in ours.named_parameters()}
    losses = [_train(m, tmp_path / name, checkpointing) for name, m in (("ours", ours), ("theirs", theirs))]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-6)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert not torch.equal(p, before[name]), f"{name} did not change"
        torch.testing.assert_close(p, theirs_params[name], atol=1e-5, rtol=1e-5)


def test_num_items_in_batch_is_a_sum_over_them(fixture_dir):
    model = tessera.from_pretrained(str(fixture_dir("llama")))
    row = _data()[1]
    ids, labels = row["input_ids"][None], row["labels"][None]
    mean = model(ids, labels=labels).loss
    targets = int((labels[:, 1:] != -100).sum())
    for n in (10, torch.tensor(10)):  # Trainer passes a tensor
        torch.testing.assert_close(model(ids, labels=labels, num_items_in_batch=n).loss, mean * targets / 10)
    none = torch.full_like(labels, -100)
    assert model(ids, labels=none, num_items_in_batch=10).loss.item() == 0.0


def _save_run(model, out_dir, callbacks):
    args = transformers.TrainingArguments(
        output_dir=str(out_dir), use_cpu=True, seed=0, max_steps=2, per_device_train_batch_size=2, save_steps=1,
        learning_rate=1e-3, report_to=[], disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_data(), callbacks=callbacks)
    trainer.train()
    trainer.save_model()


def test_trainer_folders_load_in_both_libraries_with_the_callback(fixture_dir, tmp_path):
    """Trainer saves a model not its own as weights alone; SavePretrainedCallback adds the config
    to every checkpoint and to the output folder, which tessera and transformers then load alike."""
    from tessera.hf_trainer import SavePretrainedCallback

    model = tessera.from_pretrained(str(fixture_dir("llama")))
    _save_run(model, tmp_path, [SavePretrainedCallback()])
    ids = _data()[0]["input_ids"][None]
    for folder in (tmp_path, tmp_path / "checkpoint-1", tmp_path / "checkpoint-2"):
        ours, theirs = tessera.from_pretrained(str(folder)), transformers.LlamaForCausalLM.from_pretrained(str(folder))
        with torch.no_grad():
            torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the output folder holds the trained weights
        torch.testing.assert_close(tessera.from_pretrained(str(tmp_path))(ids).logits, model(ids).logits)


def test_a_folder_of_weights_alone_loads_with_a_config(fixture_dir, tmp_path):
    d = fixture_dir("llama")
    model = tessera.from_pretrained(str(d))
    _save_run(model, tmp_path, [])
    with pytest.raises(FileNotFoundError, match="a folder of weights alone.*config="):
        tessera.from_pretrained(str(tmp_path))
    ids = _data()[0]["input_ids"][None]
    with torch.no_grad():
        want = model(ids).logits
        for config in (str(d), str(d / "config.json"), model.config, dict(model.config),
                       transformers.AutoConfig.from_pretrained(str(d))):
            for load in (tessera.from_pretrained, tessera.LlamaForCausalLM.from_pretrained):
                torch.testing.assert_close(load(str(tmp_path), config=config)(ids).logits, want, atol=0, rtol=0)
    with pytest.raises(TypeError, match="config must be a dict"):
        tessera.from_pretrained(str(tmp_path), config=3)
    with pytest.raises(ValueError, match="the config given"):  # a config that does not build names its source
        tessera.from_pretrained(str(tmp_path), config={**model.config, "hidden_size": -1})
    with pytest.raises(ValueError, match="the config given: dtype"):  # the dict's, not the folder's
        tessera.from_pretrained(str(tmp_path), config={**model.config, "dtype": "float31"})
    with pytest.raises(ValueError, match=f"{d / 'config.json'}: a 'llama' checkpoint"):
        tessera.CLIPVisionModel.from_pretrained(str(tmp_path), config=str(d))


def test_the_callback_saves_a_lora_model_merged(fixture_dir, tmp_path):
    """Trainer's own file holds LoRA adapters unmerged, which transformers drops without a word:
    the callback saves each checkpoint whole (merged weights, the adapter in PEFT's files)."""
    from tessera.hf_trainer import SavePretrainedCallback
    from tessera.lora import apply_lora

    model = tessera.from_pretrained(str(fixture_dir("llama")))
    apply_lora(model, ["q_proj", "v_proj"], r=4)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, seed=0, max_steps=2, per_device_train_batch_size=2, save_steps=2,
        learning_rate=5e-2, report_to=[], disable_tqdm=True)
    ids = _data()[0]["input_ids"][None]
    with torch.no_grad():
        before = model(ids).logits
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_data(), callbacks=[SavePretrainedCallback()])
    with pytest.warns(UserWarning, match=r"trainer.save_model\(\) after this would write its adapters unmerged"):
        trainer.train()
    with torch.no_grad():
        trained = model(ids).logits
        assert (trained - before).abs().max() > 1e-2
        for folder in (tmp_path / "checkpoint-2", tmp_path):
            for load in (tessera.from_pretrained, transformers.LlamaForCausalLM.from_pretrained):
                torch.testing.assert_close(load(str(folder))(ids).logits, trained, atol=1e-5, rtol=1e-5)
    assert (tmp_path / "checkpoint-2" / "adapter" / "adapter_config.json").is_file()


def test_the_callback_writes_wherever_trainer_writes_weights(fixture_dir, tmp_path):
    """Trainer writes weights where `args.should_save` (every node's first process with
    save_on_each_node), not only on world rank 0."""
    from types import SimpleNamespace

    from tessera.hf_trainer import SavePretrainedCallback

    model = tessera.from_pretrained(str(fixture_dir("llama")))
    args = SimpleNamespace(should_save=True, output_dir=str(tmp_path))
    state = SimpleNamespace(is_world_process_zero=False, global_step=7)
    SavePretrainedCallback().on_save(args, state, None, model=model)
    assert (tmp_path / "checkpoint-7" / "config.json").is_file()
    SavePretrainedCallback().on_save(SimpleNamespace(should_save=False, output_dir=str(tmp_path / "x")), state, None,
                                     model=model)
    assert not (tmp_path / "x").exists()
