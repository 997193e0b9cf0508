"""Length-bucketed minibatches: similar lengths together, so padding stays small."""

import torch


def bucket_batches(lengths, batch_size, shuffle=True, seed=0, by_tokens=False):
    """Split item indices into batches of similar length.

    Args:
        lengths: length of each item.
        batch_size: items per batch, or (``by_tokens``) the most tokens per batch (a longer
            item still gets a batch of its own).
        shuffle: shuffle within equal lengths and the order of batches (seeded), else keep
            the sorted order.
    Returns:
        A list of lists of item indices; every index appears exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    order = list(range(len(lengths)))
    if shuffle:
        order = torch.randperm(len(lengths), generator=generator).tolist()
    order.sort(key=lambda index: lengths[index])  # stable: shuffled ties stay shuffled
    batches, current, tokens = [], [], 0
    for index in order:
        size = lengths[index] if by_tokens else 1
        if current and tokens + size > batch_size:
            batches.append(current)
            current, tokens = [], 0
        current.append(index)
        tokens += size
    if current:
        batches.append(current)
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
    return batches
