"""The edge of a batch: a metric over nothing, an empty local batch on several ranks, a loss past
float range. Each is refused by name or reported as its reference reports it; none is a number
that passes for a score (0.0 or NaN) or a crash. open_clip's zero-shot divides by zero on an empty
set, transformers' run_clm reports exp(loss) up to float range."""
import math

import pytest
import torch

from tessera import _C, ops
from tessera.eval import multi_caption_recall, recall_at_k, zero_shot_evaluate
from tessera.losses.sugar import discriminative_loss


class Features(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.eye(4))

    def get_image_features(self, px):
        return px @ self.w


def test_a_metric_over_no_items_is_refused():
    classifier = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    with pytest.raises(ValueError, match="zero-shot: evaluation images: no items to score"):
        zero_shot_evaluate(Features(), [], classifier)  # every sample filtered out, say
    batch = {"pixel_values": torch.eye(4)[:3], "labels": torch.tensor([0, 1, 2])}
    assert zero_shot_evaluate(Features(), [batch], classifier)["num_images"] == 3
    empty = torch.empty(0, 4)
    with pytest.raises(ValueError, match="retrieval: image-caption pairs: no items"):
        recall_at_k(empty, empty, [], ks=(1,))
    with pytest.raises(ValueError, match="retrieval: images and captions: no items"):
        multi_caption_recall(empty, empty, [], ks=(1,))
    with pytest.raises(ValueError, match="discriminative_loss: no point in the batch"):
        discriminative_loss(torch.randn(0, 4), torch.zeros(0, 0))


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_an_empty_local_batch_with_gathered_features_is_refused_not_a_crash(loss):
    """The world size is the gathered count over the local batch: 0 divided the process to death
    (SIGFPE) on every rank."""
    empty, gathered = torch.randn(0, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match=f"{loss}_loss: an empty local batch"):
        if loss == "clip":
            _C.losses.clip_loss(empty, empty, torch.tensor(10.0), all_image_features=gathered,
                                all_text_features=gathered, local_loss=True, rank=0)
        else:
            _C.losses.siglip_loss(empty, empty, torch.tensor(10.0), all_text_features=gathered, rank=0)


def test_gak_of_an_empty_sequence_names_gak():
    with pytest.raises(ValueError, match="gak: both sequences need at least one step, got 0 and 3"):
        ops.gak(torch.rand(0, 2), torch.rand(3, 2), sigma=1.0)


def test_perplexity_is_exp_of_the_loss_as_run_clm_reports_it(tmp_path, monkeypatch):
    """It was capped at exp(50) = 5.2e21 for every held-out loss above 50."""
    from tessera.train import causal_lm_task

    task = causal_lm_task.CausalLmTask.__new__(causal_lm_task.CausalLmTask)
    held = {"input_ids": torch.ones(1, 4, dtype=torch.long), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    monkeypatch.setattr(causal_lm_task, "encode_lines", lambda *a: held)

    class Model(torch.nn.Module):
        device = torch.device("cpu")
        loss = 111.93

        def forward(self, **kw):
            return type("Out", (), {"loss_sum": torch.tensor(self.loss * 3), "num_tokens": torch.tensor(3)})

    task.recipe = type("R", (), {"data": type("D", (), {"eval": "held.txt", "max_length": 8, "batch_size": 2}),
                                 "eval": type("E", (), {"max_documents": 0})})
    task.tokenizer = None
    out = task.evaluate(Model())
    assert out["perplexity"] == pytest.approx(math.exp(111.93), rel=1e-5)  # the loss sum is fp32
    Model.loss = 800.0  # past float range: inf, as run_clm's OverflowError branch
    assert task.evaluate(Model())["perplexity"] == math.inf
    Model.loss = 0.0  # no held-out token counted
    held["attention_mask"] = torch.zeros(1, 4, dtype=torch.long)
    Model.forward = lambda self, **kw: type("Out", (), {"loss_sum": torch.tensor(0.0), "num_tokens": torch.tensor(0)})
    with pytest.raises(ValueError, match="held.txt: held-out tokens: no items"):
        task.evaluate(Model())


def test_a_probe_smaller_than_its_neighbours_is_refused_before_reading(tmp_path):
    from tessera.eval.probe import knn, probe

    with pytest.raises(ValueError, match="--probe-train\\) 5: at least 20"):
        probe(lambda px: px.flatten(1), 28, root=str(tmp_path / "absent"), train_images=5)
    with pytest.raises(ValueError, match="k-NN over 20 neighbours needs at least 20 training features, got 3"):
        knn(torch.randn(3, 4), torch.tensor([0, 1, 0]), torch.randn(2, 4), torch.tensor([0, 1]))


@pytest.mark.parametrize("kwargs, rows", [({"num_beams": 10 ** 10}, "1 rows x num_beams 10000000000"),
                                          ({"do_sample": True, "num_return_sequences": 10 ** 10},
                                           "10000000000 rows x num_beams 1")])
def test_generation_past_memory_names_its_sizes(kwargs, rows):
    """The allocator's message named a byte count alone (transformers' too)."""
    import os

    import tessera

    if not os.path.isdir("/work/shared/fixtures/hf/llama"):
        pytest.skip("the LLaMA fixture is not here")
    model = tessera.from_pretrained("/work/shared/fixtures/hf/llama")
    with pytest.raises(RuntimeError, match=f"generate\\(\\): {rows} of up to 6 positions do not fit in memory"
                                           ".*can't allocate memory") as caught:  # accelerate's finders match that
        model.generate(torch.tensor([[1, 5, 6, 7]]), max_new_tokens=2, **kwargs)
    assert isinstance(caught.value.__cause__, RuntimeError)
