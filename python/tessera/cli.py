"""The `tessera` command: train | eval | plan | convert | info."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from .cli_types import memory_size, non_negative_float, non_negative_int, positive_int
from .io import is_regular_file


def _train(args) -> int:
    import torch.distributed as dist

    from .train import run
    from .train.distributed import shutdown_distributed
    from .train.tasks import import_modules

    import_modules(args.imports)
    try:
        summary = run(args.recipe, args.out, resume=args.resume, overrides=args.set, progress=not args.quiet,
                      overwrite=args.overwrite)
        shutdown_distributed()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if summary.get("world_size", 1) == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(_format_summary(summary, args.out))
    return 0


_BOOKKEEPING = ("train_steps", "skipped_steps", "first_loss", "final_loss", "seconds", "world_size", "strategy",
                "trainable_parameters", "total_parameters")


def _format_summary(summary, out_dir: str) -> str:
    """The run's steps and losses, then every number its task's final evaluation reported (each
    task names its own: CLIP's zero-shot accuracy, VQ-KD's codebook use, BLIP-2's ITM...)."""
    lines = [f"\nrun folder: {out_dir}"]
    metrics = [k for k in summary if k not in _BOOKKEEPING]
    for k in ("train_steps", "skipped_steps", "first_loss", "final_loss", *metrics, "seconds"):
        v = summary.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        lines.append(f"  {k:20s} {v:.4f}" if isinstance(v, float) else f"  {k:20s} {v}")
    return "\n".join(lines)


#: Recipe settings that decide the pixels a model sees: evaluated otherwise than it was trained, it
#: scores other inputs.
PIXEL_SETTINGS = ("data.image_mean", "data.image_std", "data.image_aspect_ratio", "data.image_size")


def _say_pixel_changes(folder: str, recipe) -> None:
    """Warns when the recipe given to eval feeds the run other pixels than its own recipe.json did."""
    from ._warn import warn
    from .train.checkpoint import recipe_changes
    from .train.config import recipe_defaults, recipe_to_dict

    changes = [c for c in recipe_changes(folder, recipe_to_dict(recipe), recipe_defaults(recipe))
               if c.split(":")[0] in PIXEL_SETTINGS]
    if changes:
        warn(f"eval: the recipe feeds {folder} other pixels than it was trained on ({'; '.join(changes)}); "
             "give its own recipe, or --set these back")


_PROBE_FLAGS = ("random_init", "data", "probe_train", "probe_test")
_TASK_FLAGS = ("recipe", "retrieval", "captioning", "prompt", "split", "image_root", "set", "dtype")


def _refuse_unused_eval_flags(args) -> None:
    """A flag the chosen evaluation does not read is an error, not ignored: `--probe --dtype int8`
    reported fp32 numbers, and `--split` without a split file the recipe's data."""
    def given(names):
        return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) not in (None, False, [], "")]

    if args.probe and given(_TASK_FLAGS):
        raise ValueError(f"eval --probe reads the encoder alone: {', '.join(given(_TASK_FLAGS))} go with a recipe's "
                         "evaluation (leave --probe out)")
    if not args.probe and given(_PROBE_FLAGS):
        raise ValueError(f"{', '.join(given(_PROBE_FLAGS))} go with --probe")
    for name in ("recipe", "data", "split", "image_root"):
        if getattr(args, name) == "":  # an empty value read as "not given" fell back to a default
            raise ValueError(f"--{name.replace('_', '-')}: an empty value (leave the flag out for its default)")
    if not isinstance(args.retrieval, str) and args.captioning is None and given(("split", "image_root")):
        raise ValueError(f"{', '.join(given(('split', 'image_root')))} go with a split file (--retrieval FILE or "
                         "--captioning FILE)")


def _eval(args) -> int:
    from .train import build_task, load_recipe
    from .train.tasks import import_modules

    import_modules(args.imports)
    _refuse_unused_eval_flags(args)
    if args.probe:
        from .eval.probe import run_probe

        given = {k: v for k, v in (("root", args.data), ("train_images", args.probe_train),
                                   ("test_images", args.probe_test)) if v is not None}  # else run_probe's defaults
        print(json.dumps(run_probe(args.checkpoint, args.random_init, **given), indent=2))
        return 0
    own_recipe = not args.recipe
    if own_recipe:  # the recipe the checkpoint was trained with (data only: recipes import nothing)
        from .train.checkpoint import resolve_checkpoint

        args.recipe = os.path.join(resolve_checkpoint(args.checkpoint, "eval checkpoint"), "recipe.json")
        if not is_regular_file(args.recipe):
            raise ValueError(f"{args.checkpoint}: no recipe.json beside the weights (not a tessera training "
                             "checkpoint): give --recipe (its task, data and eval sections), or --probe")
    split_file = args.retrieval if isinstance(args.retrieval, str) else None
    if split_file is not None and not split_file.strip():  # an empty value fell back to plain evaluation
        raise ValueError("--retrieval: an empty file name (give a split file, or --retrieval alone for the recipe's data)")
    if args.captioning is not None and not args.captioning.strip():
        raise ValueError("--captioning: an empty file name (give a split file)")
    if args.captioning is not None and args.retrieval:
        raise ValueError("--captioning and --retrieval: one evaluation per call")
    if args.prompt and args.captioning is None:
        raise ValueError("--prompt goes with --captioning")
    recipe = load_recipe(args.recipe, args.set + (["eval.retrieval=true"] if args.retrieval is True else []))
    if own_recipe:
        from .chat import run_recipe
        from .train.config import fill_older_keys

        fill_older_keys(recipe, run_recipe(os.path.dirname(args.recipe)))
    from .train.checkpoint import check_eval_checkpoint, resolve_checkpoint
    from .train.tasks import Task

    task = build_task(recipe)
    split = None
    if split_file and type(task).evaluate_split is Task.evaluate_split:
        Task.evaluate_split(task, None, None)  # refused, naming the task, before anything is read
    if args.captioning is not None and type(task).evaluate_captions is Task.evaluate_captions:
        Task.evaluate_captions(task, None, None)
    if split_file or args.captioning is not None:  # read and checked (every image file) before the model is loaded
        from .eval.caption_retrieval import load_retrieval_split

        split = load_retrieval_split(split_file or args.captioning, args.split, args.image_root)
    folder = resolve_checkpoint(args.checkpoint, "eval checkpoint")
    check_eval_checkpoint(folder, task)  # checksums and model type, before anything is built
    _say_pixel_changes(folder, recipe)
    model = task.load_model(folder).eval()
    if (args.dtype or "fp32") == "bf16":
        import torch

        model = model.to(torch.bfloat16)
    elif args.dtype == "int8":
        from .quantization import int8_decoding

        int8_decoding(model)
    if args.captioning is not None:
        metrics = task.evaluate_captions(model, split, args.prompt)
    elif split is not None:
        metrics = task.evaluate_split(model, split)
    else:
        metrics = task.evaluate(model, final=False)
    print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, indent=2))
    return 0


def _inspect_data(args) -> int:
    from .train import build_task, load_recipe
    from .train.tasks import import_modules

    import_modules(args.imports)
    task = build_task(load_recipe(args.recipe, args.set))
    if not hasattr(task, "inspect"):
        raise ValueError(f"task {type(task).__name__} has no data inspection (it has no token labels)")
    print(task.inspect(args.samples))
    return 0


def _chat(args) -> int:
    from .chat_cli import run_chat

    return run_chat(args)


def _plan(args) -> int:
    from .plan.cli import run_plan

    return run_plan(args)


def _convert(args) -> int:
    """A PyTorch state-dict file (.bin/.pt) with HF keys + config.json -> a safetensors folder."""
    import torch

    from . import _C
    from .checksums import refresh_model_files
    from .models.pretrained import read_config

    from .models.weights import read_state_file

    # Everything is read and checked before anything is written: a failure leaves DST as it was.
    config = read_config(args.config)
    state = {k: v.contiguous() for k, v in read_state_file(args.src).items()}
    _check_convertible(state, config, args)
    os.makedirs(args.dst, exist_ok=True)
    _C.core.save_safetensors(os.path.join(args.dst, "model.safetensors"), state, {"format": "pt"})
    _C.core.write_file_atomic(os.path.join(args.dst, "config.json"), (json.dumps(config, indent=2) + "\n").encode())
    refresh_model_files(args.dst)
    print(f"wrote {len(state)} tensors to {args.dst}")
    return 0


def _import_llava(args) -> int:
    from .models.llava_original import convert_llava_original

    print(f"wrote {convert_llava_original(args.src, args.dst, args.vision_tower)}")
    return 0


def _check_convertible(state, config, args) -> None:
    """The tensors must be the --config model's, read as from_pretrained reads them (its key
    aliases, a base-model prefix, tied weights), checked on a model built on the meta device; an
    original repository's layout is named with what converts it."""
    import torch

    from . import registry
    from .models.weights import apply_key_aliases, check_state_fits, fill_tied, original_layout

    cls = registry.model_class(config, args.config)
    with torch.device("meta"):
        model = cls(config)
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    ours = cls._strip_base_model_prefix(apply_key_aliases(state, dtypes, cls.key_aliases), dtypes, args.src)
    try:
        check_state_fits(fill_tied(ours, getattr(model, "tied_weights", {})), model, args.src)
    except ValueError as e:
        how = original_layout(state)
        raise ValueError(f"{e}{f' This file is {how}.' if how else ''}") from None


def _info(args) -> int:
    import torch

    import tessera

    from . import registry

    print(f"tessera {tessera.__version__} (torch {torch.__version__}, CUDA available: {torch.cuda.is_available()})")
    variants: dict = {}
    for name in registry.list_variants():
        variants.setdefault(registry.variant(name)[0], []).append(name)
    classes = registry.registered_classes()
    for family in sorted(set(variants) | {c.__module__.rsplit(".", 1)[-1] for c in classes}):
        types = [f"{c.model_type} ({c.__name__})" for c in classes if c.__module__.rsplit(".", 1)[-1] == family]
        print(f"{family}: model types {', '.join(types) or '-'}; variants {', '.join(variants.get(family, [])) or '-'}")
    print(f"include: {tessera.include_paths()[0]}\ncmake prefix: {tessera.cmake_prefix_path}")
    return 0


def _one_line_errors() -> tuple:
    """Errors that say what is wrong and what to do: printed as one line, not a traceback."""
    from .train.checkpoint import CheckpointWriteError
    from .train.run_lock import RunFolderLocked

    return ValueError, FileNotFoundError, PermissionError, CheckpointWriteError, RunFolderLocked


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="tessera", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a recipe (YAML)")
    t.add_argument("recipe")
    t.add_argument("--out", default="runs/default")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    t.add_argument("--overwrite", action="store_true", help="start over in an --out holding an earlier run's "
                   "checkpoints (they are deleted)")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=_train)
    e = sub.add_parser("eval", help="evaluate a checkpoint folder with a recipe's task, or probe its encoder")
    e.add_argument("checkpoint", help="checkpoint or run folder (its newest checkpoint); with --probe also 'pixels'")
    e.add_argument("--recipe", help="recipe whose task, data and eval sections to use (default: the "
                                    "checkpoint's recipe.json, the one it was trained with)")
    e.add_argument("--retrieval", nargs="?", const=True, default=False, metavar="SPLIT_FILE",
                   help="CLIP: also image-text retrieval on the recipe's eval data; with a file (CLIP or BLIP-2 "
                        "stage 1 runs), R@1/5/10 on it instead (coco:dataset_coco.json, "
                        "flickr30k:dataset_flickr30k.json, annotations:list.json)")
    e.add_argument("--captioning", metavar="SPLIT_FILE", help="LLaVA (and BLIP-2 stage 2, Sugar) runs: greedy "
                   "captions of the split's images, BLEU-4 and CIDEr-D against all of each image's captions "
                   "(the same file kinds as --retrieval)")
    e.add_argument("--prompt", default="", help="--captioning: the user turn's text after the image (default: "
                   "the image alone, as stage 1 learns captions)")
    e.add_argument("--split", default=None, help="--retrieval/--captioning FILE: the Karpathy split (test, val, ...; "
                   "default test); a LAVIS annotation list is one split's file")
    e.add_argument("--image-root", help="--retrieval/--captioning FILE: the folder image paths are relative to "
                   "(default: the file's folder)")
    e.add_argument("--probe", action="store_true", help="linear-probe and k-NN accuracy of the encoder's features "
                   "on Fashion-MNIST")
    e.add_argument("--random-init", action="store_true", help="--probe the same architecture, untrained")
    e.add_argument("--data", default=None, help="--probe: Fashion-MNIST folder (default: Debian's "
                   "dataset-fashion-mnist, /usr/share/datasets/fashion-mnist)")
    e.add_argument("--probe-train", type=positive_int, default=None, help="--probe: training images (default 10000)")
    e.add_argument("--probe-test", type=positive_int, default=None, help="--probe: test images (default 2000)")
    e.add_argument("--dtype", choices=["fp32", "bf16", "int8"], default=None,
                   help="the model's weights while evaluating: bf16 halves the bytes each decoding step reads; "
                        "int8 decodes from per-row int8 copies (tessera.quantization), the rest stays fp32 "
                        "(default fp32)")
    e.add_argument("--set", action="append", default=[])
    e.set_defaults(fn=_eval)
    pl = sub.add_parser("plan", help="per-rank memory of a recipe before running it; settings that fit")
    pl.add_argument("recipe")
    pl.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    pl.add_argument("--world-size", type=positive_int, default=None, help="processes (default: WORLD_SIZE or 1)")
    pl.add_argument("--device-memory", type=memory_size, default=None, help="memory per device to fit, e.g. 24GB, 80GiB")
    pl.add_argument("--measure", action="store_true", help="also run steps and report the measured peak")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.set_defaults(fn=_plan)
    d = sub.add_parser("inspect-data", help="check every sample of a recipe's data; print a few token by token")
    d.add_argument("recipe")
    d.add_argument("--samples", type=non_negative_int, default=3)
    d.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    d.set_defaults(fn=_inspect_data)
    ch = sub.add_parser("chat", help="ask a LLaVA run about an image; the answer streams")
    ch.add_argument("checkpoint", help="a LLaVA run or checkpoint folder")
    ch.add_argument("-q", "--question", default=None, help="one question (default: questions from stdin, one per line)")
    ch.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    ch.add_argument("--tokenizer", help="SentencePiece model (default: the run's recipe)")
    ch.add_argument("--template", help="conversation template (default: the run's recipe)")
    ch.add_argument("--max-new-tokens", type=positive_int, default=None,
                    help="default: the run's generation_config.json, else 64")
    ch.add_argument("--temperature", type=non_negative_float, default=0.0, help="0: greedy")
    ch.add_argument("--seed", type=non_negative_int, default=0)
    ch.set_defaults(fn=_chat)
    for sp in (t, e, pl, d):
        sp.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import a module that registers tasks (repeatable)")
    c = sub.add_parser("convert", help="PyTorch state dict (HF keys) -> model.safetensors folder")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--config", required=True, help="config.json of the model")
    c.set_defaults(fn=_convert)
    li = sub.add_parser("import-llava", help="LLaVA's own checkpoint (llava_llama) -> a Hugging Face LLaVA folder")
    li.add_argument("src", help="the checkpoint folder LLaVA's training wrote")
    li.add_argument("dst")
    li.add_argument("--vision-tower", default=None, help="the CLIP tower's folder (default: the config's "
                    "mm_vision_tower, when it is a local folder)")
    li.set_defaults(fn=_import_llava)
    i = sub.add_parser("info", help="versions, models, build paths")
    i.set_defaults(fn=_info)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except _one_line_errors() as err:  # evaluated only when something was raised
        print(f"tessera {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
