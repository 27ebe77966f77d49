"""Counter-based noise: published Philox4x32-10 known-answer vectors (Random123 kat_vectors),
independence from batch neighbours, and the shape of the distribution."""
import pytest
import torch

from codefusion.noise import STREAM_INIT, gaussian, philox4x32

KAT = [  # counter, key, expected (Random123, kat_vectors: "philox4x32 10 …")
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    as_t = lambda ws: tuple(torch.tensor([w], dtype=torch.int64) for w in ws)  # noqa: E731
    out = philox4x32(as_t(counter), as_t(key))
    assert tuple(int(x) for x in out) == expected


def test_rows_do_not_depend_on_batch_neighbours():
    seeds, samples = torch.tensor([7, 3, 7, 9]), torch.tensor([0, 1, 2, 0])
    batch = gaussian(seeds, samples, 42, (5, 6))
    for r in range(4):
        single = gaussian(seeds[r:r + 1], samples[r:r + 1], 42, (5, 6))
        assert torch.equal(batch[r], single[0])


def test_keys_separate_streams_and_replay():
    base = gaussian(torch.tensor([1]), torch.tensor([0]), 10, (8, 8))
    assert torch.equal(base, gaussian(torch.tensor([1]), torch.tensor([0]), 10, (8, 8)))
    for other in [gaussian(torch.tensor([2]), torch.tensor([0]), 10, (8, 8)),
                  gaussian(torch.tensor([1]), torch.tensor([1]), 10, (8, 8)),
                  gaussian(torch.tensor([1]), torch.tensor([0]), 11, (8, 8)),
                  gaussian(torch.tensor([1]), torch.tensor([0]), 10, (8, 8), stream=STREAM_INIT)]:
        assert not torch.allclose(base, other)


def test_prefix_positions_do_not_depend_on_length():
    short = gaussian(torch.tensor([5]), torch.tensor([0]), 3, (16, 8))
    long = gaussian(torch.tensor([5]), torch.tensor([0]), 3, (64, 8))
    assert torch.equal(short, long[:, :16])


def test_large_seed_and_step_tensor():
    z1 = gaussian(torch.tensor([2 ** 62 + 5]), torch.tensor([0]), torch.tensor(1199), (4, 4))
    z2 = gaussian(torch.tensor([2 ** 62 + 5]), torch.tensor([0]), 1199, (4, 4))
    assert torch.equal(z1, z2) and torch.isfinite(z1).all()


def test_standard_normal_moments():
    z = gaussian(torch.arange(8), torch.zeros(8, dtype=torch.int64), 0, (128, 128)).flatten().double()
    n = z.numel()  # 131072 draws: the standard error of the mean is 0.0028
    assert abs(z.mean()) < 0.015 and abs(z.var() - 1) < 0.02
    assert abs((z ** 3).mean()) < 0.05 and abs((z ** 4).mean() - 3) < 0.1
    assert (z.abs() > 3).double().mean() == pytest.approx(0.0027, abs=0.001) and n == 131072
