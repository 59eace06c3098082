"""confluent-kafka (its bundled librdkafka) against the recjoin broker: idempotent round trips
with gzip, lz4 and zstd, a consumer group that commits and resumes, and admin create/delete.

Usage: confluent_kafka_clients.py BOOTSTRAP SUFFIX
Prints `VERSION ...` and `RESULT <check> <count>` lines; exits non-zero on any failure.
"""

import sys
import time

import confluent_kafka
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP, SUFFIX = sys.argv[1], sys.argv[2]
COMMON = {"bootstrap.servers": BOOTSTRAP, "broker.address.family": "v4"}


def deadline(seconds):
    end = time.monotonic() + seconds
    return lambda: time.monotonic() < end


def produce(topic, values, compression, partitions=None):
    producer = Producer({**COMMON, "acks": "all", "enable.idempotence": True,
                         "compression.type": compression, "linger.ms": 5})
    acks, errors = {}, []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acks[msg.value().decode()] = (msg.partition(), msg.offset())

    for i, v in enumerate(values):
        kwargs = {} if partitions is None else {"partition": i % partitions}
        producer.produce(topic, key=f"k{i % 7}".encode(), value=v.encode(), on_delivery=on_delivery, **kwargs)
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} messages not delivered"
    assert not errors, f"delivery errors: {errors[:5]}"
    return acks


def read_all(topic, expected):
    consumer = Consumer({**COMMON, "group.id": f"reader-{topic}", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    out = []
    alive = deadline(60)
    while len(out) < expected and alive():
        for m in consumer.consume(num_messages=500, timeout=0.5):
            if m.error():
                raise KafkaException(m.error())
            out.append(m)
    for m in consumer.consume(num_messages=500, timeout=1.0):
        assert not m.error(), m.error()
        out.append(m)
    consumer.close()
    return out


def round_trip(compression):
    topic = f"ck-{compression}-{SUFFIX}"
    values = [f"{compression}-{i}" for i in range(2000)]
    acks = produce(topic, values, compression)
    assert len(acks) == len(values)
    records = read_all(topic, len(values))
    got = [m.value().decode() for m in records]
    assert sorted(got) == sorted(values), f"{compression}: read {len(got)}, produced {len(values)}"
    for m in records:
        assert acks[m.value().decode()] == (m.partition(), m.offset()), f"{compression}: offset mismatch"
    last = {}
    for m in records:
        i = int(m.value().decode().rsplit("-", 1)[1])
        assert last.get(m.key(), -1) < i, f"{compression}: key {m.key()}: {i} after {last.get(m.key())}"
        last[m.key()] = i
    print(f"RESULT roundtrip-{compression} {len(got)}", flush=True)


def group_commit_and_resume():
    topic = f"ck-group-{SUFFIX}"
    group = f"ck-g-{SUFFIX}"
    admin = AdminClient(COMMON)
    for f in admin.create_topics([NewTopic(topic, 4, 1)]).values():
        f.result(30)
    values = [f"g-{i}" for i in range(800)]
    produce(topic, values, "lz4", partitions=4)

    def member():
        c = Consumer({**COMMON, "group.id": group, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
        c.subscribe([topic])
        return c

    first = member()
    seen = []
    alive = deadline(60)
    while len(seen) < 300 and alive():
        m = first.poll(0.5)
        if m is None:
            continue
        assert not m.error(), m.error()
        seen.append(m)
    assert len(seen) == 300, f"first member read {len(seen)}"
    first.commit(asynchronous=False)
    positions = {}
    for m in seen:
        positions[m.partition()] = m.offset() + 1
    committed = first.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)
    for tp in committed:
        want = positions.get(tp.partition)
        if want is not None:
            assert tp.offset == want, f"committed {tp.offset} for partition {tp.partition}, consumed to {want}"
    first.close()

    second = member()
    rest = []
    alive = deadline(60)
    while len(rest) < 500 and alive():
        for m in second.consume(num_messages=100, timeout=0.5):
            assert not m.error(), m.error()
            rest.append(m)
    for m in second.consume(num_messages=100, timeout=1.5):
        assert not m.error(), m.error()
        rest.append(m)
    second.close()
    starts = {}
    for m in rest:
        starts.setdefault(m.partition(), m.offset())
    for p, off in starts.items():
        assert off == positions.get(p, 0), f"partition {p}: resumed at {off}, committed {positions.get(p, 0)}"
    all_values = [m.value().decode() for m in seen + rest]
    assert len(all_values) == len(set(all_values)) == 800, \
        f"{len(seen)} + {len(rest)} records, {len(set(all_values))} distinct"
    print(f"RESULT group-first {len(seen)}", flush=True)
    print(f"RESULT group-resumed {len(rest)}", flush=True)


def admin_create_delete():
    admin = AdminClient(COMMON)
    names = [f"ck-admin-{SUFFIX}-{i}" for i in range(3)]
    for f in admin.create_topics([NewTopic(n, 1 + i, 1) for i, n in enumerate(names)]).values():
        f.result(30)
    md = admin.list_topics(timeout=10)
    for i, n in enumerate(names):
        assert n in md.topics, f"{n} not listed"
        assert len(md.topics[n].partitions) == 1 + i, f"{n}: {len(md.topics[n].partitions)} partitions"
    dup = admin.create_topics([NewTopic(names[0], 1, 1)])[names[0]]
    try:
        dup.result(30)
        raise AssertionError("creating an existing topic succeeded")
    except KafkaException as e:
        assert e.args[0].code() == confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS, e
    for f in admin.create_partitions([confluent_kafka.admin.NewPartitions(names[2], 5)]).values():
        f.result(30)
    for f in admin.delete_topics(names[:2], operation_timeout=30).values():
        f.result(30)
    alive = deadline(30)
    while alive():
        md = admin.list_topics(timeout=10)
        if not set(names[:2]) & set(md.topics):
            break
        time.sleep(0.1)
    assert not set(names[:2]) & set(md.topics), "deleted topics still listed"
    assert len(md.topics[names[2]].partitions) == 5, "CreatePartitions did not take"
    print("RESULT admin 3", flush=True)


VERSION = confluent_kafka.version()
VERSION = VERSION if isinstance(VERSION, str) else VERSION[0]
print(f"VERSION confluent-kafka {VERSION} librdkafka {confluent_kafka.libversion()[0]}", flush=True)
for codec in ("gzip", "lz4", "zstd"):
    round_trip(codec)
group_commit_and_resume()
admin_create_delete()
print("DONE", flush=True)
