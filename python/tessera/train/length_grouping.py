"""LLaVA's length-grouped sample order (`group_by_modality_length`, llava/train/llava_trainer.py):
samples of similar token counts share a batch, so little of a batch is padding, and a batch
holds either image samples or text-only ones. Mirrored step for step, with two changes: every
random draw comes from the caller's generator (LLaVA draws the per-modality permutations from the
global RNG), so an epoch's order is a function of (seed, epoch) and a resumed run sees it again;
and the work is done on int32 tensors, not Python lists (558K samples: 2 MB, not 60 MB)."""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch


def split_to_even_chunks(indices: Sequence[int], lengths: Sequence[int], num_chunks: int) -> List[List[int]]:
    """`indices` dealt into `num_chunks` chunks of equal size, each to the chunk with the fewest
    tokens so far (an uneven count falls back to striding)."""
    if len(indices) % num_chunks:
        return [list(indices[i::num_chunks]) for i in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks: List[List[int]] = [[] for _ in range(num_chunks)]
    totals = [0.0] * num_chunks
    for index, length in zip(indices, lengths):
        shortest = totals.index(min(totals))
        chunks[shortest].append(index)
        totals[shortest] += length
        if len(chunks[shortest]) == per_chunk:
            totals[shortest] = float("inf")
    return chunks


def length_grouped_indices(lengths: torch.Tensor, batch_size: int, world_size: int,
                           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A random permutation cut into megabatches of world_size x batch_size, each sorted longest
    first (stable, as Python's sorted) and split into world_size chunks of balanced token counts."""
    lengths = torch.as_tensor(lengths)
    n, size = len(lengths), world_size * batch_size
    order = torch.randperm(n, generator=generator, dtype=torch.int32)
    rows_per_step = max(1, (1 << 16) // size)  # bounded int64 temporaries of argsort
    for start in range(0, n, rows_per_step * size):
        span = order[start:min(n, start + rows_per_step * size)]
        full = span.numel() // size * size
        for block in (span[:full].view(-1, size), span[full:].view(1, -1)):
            if block.numel():  # sorted in place: `order` becomes the grouped order
                block.copy_(block.gather(1, lengths[block.long()].argsort(dim=1, descending=True, stable=True)))
    if world_size > 1:
        for megabatch in order.split(size):
            ids = megabatch.tolist()
            chunks = split_to_even_chunks(ids, lengths[megabatch.long()].tolist(), world_size)
            megabatch.copy_(torch.tensor([i for c in chunks for i in c], dtype=torch.int32))
    return order


def modality_length_grouped_indices(lengths: torch.Tensor, batch_size: int, world_size: int,
                                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """`lengths` > 0 for samples with an image, < 0 for text-only ones (LLaVA's
    `modality_lengths`). Each modality is length-grouped on its own; its megabatches are shuffled
    together, and the two last ones (image, then text) lead the epoch when they fill a megabatch
    and end it otherwise."""
    lengths = torch.as_tensor(lengths)
    if bool((lengths == 0).any()):
        raise ValueError("length grouping: a sample has length 0")
    image, text = lengths > 0, lengths < 0
    if bool(image.all()):
        return length_grouped_indices(lengths, batch_size, world_size, generator)
    if bool(text.all()):
        return length_grouped_indices(-lengths, batch_size, world_size, generator)
    size = world_size * batch_size
    megabatches, last = [], []
    for mask in (image, text):
        ids = torch.arange(len(lengths), dtype=torch.int32)[mask]
        order = ids[length_grouped_indices(lengths[mask].abs(), batch_size, world_size, generator).long()]
        chunks = list(order.split(size))
        megabatches += chunks[:-1]
        last.append(chunks[-1])
    shuffled = [megabatches[i] for i in torch.randperm(len(megabatches), generator=generator).tolist()]
    # The two last megabatches, image then text, as they come (LLaVA @05f156c; an older LLaVA
    # sorted them by index, which mixed the modalities in every batch of the tail): a full
    # megabatch of them leads the epoch, the rest ends it.
    tail = torch.cat(last)
    if tail.numel() >= size:
        shuffled.insert(0, tail[:size])
        tail = tail[size:]
    return torch.cat(shuffled + [tail])
