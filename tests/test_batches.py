"""Pairing forget with retain examples, and padding."""

from unlearnkit.training.batches import PairCollator, UnlearnDataset, group


def ex(i, n=3):
    return {"input_ids": [i] * n, "attention_mask": [1] * n, "labels": [-100] + [i] * (n - 1)}


def test_retain_examples_all_get_used_over_a_run():
    forget = [ex(i) for i in range(3)]
    retain = [ex(100 + i) for i in range(10)]
    ds = UnlearnDataset(forget, retain, seed=0)
    seen = [ds[i % 3]["retain"]["input_ids"][0] for i in range(10)]
    assert sorted(seen) == list(range(100, 110))  # one full cycle, no repeats


def test_collator_pads_groups_separately():
    ds = UnlearnDataset([ex(1, 2), ex(2, 5)], [ex(7, 4)], idk=[ex(3, 3), ex(4, 6)])
    batch = PairCollator(pad_id=0)([ds[0], ds[1]])
    assert batch["forget_input_ids"].shape == (2, 5)
    assert batch["idk_input_ids"].shape == (2, 6)
    assert batch["retain_input_ids"].shape == (2, 4)
    assert batch["forget_labels"][0].tolist() == [-100, 1, -100, -100, -100]
    assert batch["forget_attention_mask"][0].tolist() == [1, 1, 0, 0, 0]
    assert set(group(batch, "forget")) == {"input_ids", "attention_mask", "labels"}
    assert group(PairCollator(0)([UnlearnDataset([ex(1)])[0]]), "retain") is None
