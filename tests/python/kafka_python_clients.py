"""kafka-python against the recjoin broker: round trips with gzip and lz4, a consumer group that
commits and resumes, and admin create/delete topics.

Usage: kafka_python_clients.py BOOTSTRAP SUFFIX
Prints `VERSION ...` and `RESULT <check> <count>` lines; exits non-zero on any failure.
"""

import sys
import time

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

BOOTSTRAP, SUFFIX = sys.argv[1], sys.argv[2]
COMMON = dict(bootstrap_servers=[BOOTSTRAP], request_timeout_ms=30000)


def deadline(seconds):
    end = time.monotonic() + seconds
    return lambda: time.monotonic() < end


def produce(topic, values, compression, partitions=None, **extra):
    producer = KafkaProducer(compression_type=compression, acks="all", linger_ms=5, **COMMON, **extra)
    futures = []
    for i, v in enumerate(values):
        key = f"k{i % 7}".encode()
        p = None if partitions is None else i % partitions
        futures.append(producer.send(topic, key=key, value=v.encode(), partition=p))
    producer.flush(timeout=30)
    metas = [f.get(timeout=30) for f in futures]
    producer.close(timeout=10)
    return metas


def read_all(topic, expected):
    consumer = KafkaConsumer(
        topic, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False,
        consumer_timeout_ms=2000, **COMMON,
    )
    out = []
    alive = deadline(60)
    while len(out) < expected and alive():
        for batch in consumer.poll(timeout_ms=500).values():
            out.extend(batch)
    # Anything beyond `expected` would be a duplicate.
    for batch in consumer.poll(timeout_ms=1000).values():
        out.extend(batch)
    consumer.close()
    return out


def round_trip(compression, idempotent):
    topic = f"kp-{compression}-{SUFFIX}"
    values = [f"{compression}-{i}" for i in range(1500)]
    extra = {"enable_idempotence": True} if idempotent else {}
    metas = produce(topic, values, compression, **extra)
    acked = {(m.partition, m.offset) for m in metas}
    assert len(acked) == len(values), f"{compression}: {len(acked)} distinct acks"
    records = read_all(topic, len(values))
    got = [r.value.decode() for r in records]
    assert sorted(got) == sorted(values), f"{compression}: read {len(got)} records, produced {len(values)}"
    assert {(r.partition, r.offset) for r in records} == acked, f"{compression}: offsets differ from acks"
    last = {}
    for r in records:
        i = int(r.value.decode().rsplit("-", 1)[1])
        assert r.key == f"k{i % 7}".encode(), f"key {r.key} for {i}"
        assert last.get(r.key, -1) < i, f"{compression}: key {r.key}: {i} after {last.get(r.key)}"
        last[r.key] = i
    print(f"RESULT roundtrip-{compression} {len(got)}", flush=True)


def group_commit_and_resume():
    topic = f"kp-group-{SUFFIX}"
    group = f"kp-g-{SUFFIX}"
    admin = KafkaAdminClient(**COMMON)
    admin.create_topics([NewTopic(topic, 3, 1)])
    admin.close()
    values = [f"g-{i}" for i in range(600)]
    produce(topic, values, "gzip", partitions=3)

    def member():
        return KafkaConsumer(
            topic, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
            session_timeout_ms=10000, heartbeat_interval_ms=1000, **COMMON,
        )

    first = member()
    seen = []
    alive = deadline(60)
    while len(seen) < 250 and alive():
        for batch in first.poll(timeout_ms=500, max_records=1).values():
            seen.extend(batch)
    assert len(seen) == 250, f"first member read {len(seen)}"
    first.commit()
    committed = {tp: first.committed(tp) for tp in first.assignment()}
    first.close()
    positions = {}
    for r in seen:
        positions[r.partition] = r.offset + 1
    for tp, off in committed.items():
        assert off == positions.get(tp.partition, 0) or (off is None and tp.partition not in positions), \
            f"committed {off} for {tp}, consumed up to {positions.get(tp.partition)}"

    second = member()
    rest = []
    alive = deadline(60)
    while len(rest) < 350 and alive():
        for batch in second.poll(timeout_ms=500).values():
            rest.extend(batch)
    for batch in second.poll(timeout_ms=1500).values():
        rest.extend(batch)
    second.commit()
    second.close()
    first_offsets = {}
    for r in rest:
        first_offsets.setdefault(r.partition, r.offset)
    for p, off in first_offsets.items():
        assert off == positions.get(p, 0), f"partition {p}: second member started at {off}, committed {positions.get(p, 0)}"
    all_values = [r.value.decode() for r in seen + rest]
    assert len(all_values) == len(set(all_values)) == 600, \
        f"{len(seen)} + {len(rest)} records, {len(set(all_values))} distinct"
    print(f"RESULT group-first {len(seen)}", flush=True)
    print(f"RESULT group-resumed {len(rest)}", flush=True)


def admin_create_delete():
    admin = KafkaAdminClient(**COMMON)
    names = [f"kp-admin-{SUFFIX}-{i}" for i in range(3)]
    admin.create_topics([NewTopic(n, 2 + i, 1) for i, n in enumerate(names)])
    alive = deadline(30)
    while not set(names) <= set(admin.list_topics()) and alive():
        time.sleep(0.1)
    assert set(names) <= set(admin.list_topics()), "created topics not listed"
    described = {(t.get("name") or t.get("topic")): len(t["partitions"]) for t in admin.describe_topics(names)}
    assert described == {n: 2 + i for i, n in enumerate(names)}, described
    try:
        admin.create_topics([NewTopic(names[0], 1, 1)])
        raise AssertionError("creating an existing topic succeeded")
    except kafka.errors.TopicAlreadyExistsError:
        pass
    admin.delete_topics(names[:2])
    alive = deadline(30)
    while set(names[:2]) & set(admin.list_topics()) and alive():
        time.sleep(0.1)
    left = set(admin.list_topics())
    assert not set(names[:2]) & left, f"deleted topics still listed: {left}"
    assert names[2] in left, "the topic not deleted is gone"
    admin.close()
    print("RESULT admin 3", flush=True)


print(f"VERSION kafka-python {kafka.__version__}", flush=True)
round_trip("gzip", idempotent=False)
round_trip("lz4", idempotent=True)
group_commit_and_resume()
admin_create_delete()
print("DONE", flush=True)
