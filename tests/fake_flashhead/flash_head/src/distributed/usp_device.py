"""Test double of SoulX-FlashHead's ``usp_device``: like the real one, one process means "cuda"."""

import math


def get_parallel_degree(world_size, num_heads):
    ulysses_degree = math.gcd(world_size, num_heads)
    return ulysses_degree, world_size // ulysses_degree


def get_device(ulysses_degree, ring_degree):
    if ulysses_degree > 1 or ring_degree > 1:
        raise NotImplementedError("test double: no sequence parallelism")
    return "cuda"
