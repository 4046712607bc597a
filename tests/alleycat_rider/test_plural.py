from alleycat_rider.plural import counted


def test_one_is_singular_and_every_other_count_plural() -> None:
    assert counted(1, "shard") == "1 shard"
    assert counted(0, "shard") == "0 shards"
    assert counted(1000, "rider") == "1,000 riders"
    assert counted(2, "process", "processes") == "2 processes"
