"""Reads every record of the given topics with confluent-kafka's schema-registry JSON
deserializer, as a consumer team using a schema registry would: each value's schema is
fetched by the id in its frame and the record is validated against it.

    python3 schema_registry_reader.py REGISTRY_URL BOOTSTRAP COUNT TOPIC...

Prints one JSON line per record: topic, partition, offset, the schema id of its frame and
the record's `id` and `type`. Exits non-zero when a value is not framed, its schema is not in
the registry, the record does not validate, or fewer than COUNT records arrive within 60 s.
"""

import json
import struct
import sys
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main() -> int:
    registry, bootstrap, count, topics = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    # The bridge registers `<topic>-value` subjects: Confluent's topic name strategy, set
    # here rather than the client's default, which first asks the registry for topic
    # associations (an endpoint Apicurio answers 404). Requests time out instead of hanging.
    deserializer = JSONDeserializer(
        None,
        schema_registry_client=SchemaRegistryClient({"url": registry, "timeout": 10}),
        conf={"subject.name.strategy.type": "TOPIC"},
    )
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "comm100-bridge-schema-registry-reader",
            "enable.auto.commit": False,
        }
    )
    metadata = consumer.list_topics(timeout=30)
    consumer.assign(
        [
            TopicPartition(topic, partition, 0)
            for topic in topics
            for partition in metadata.topics[topic].partitions
        ]
    )
    seen = 0
    deadline = time.monotonic() + 60
    while seen < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            print(f"consumer error: {message.error()}", file=sys.stderr)
            return 1
        value = message.value()
        where = f"{message.topic()}/{message.partition()}@{message.offset()}"
        try:
            record = deserializer(value, SerializationContext(message.topic(), MessageField.VALUE))
        except Exception as error:  # the deserializer's own verdict, whatever its type
            print(f"{where}: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
        print(
            json.dumps(
                {
                    "topic": message.topic(),
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "schema_id": struct.unpack(">I", value[1:5])[0],
                    "id": record["id"],
                    "type": record["type"],
                }
            ),
            flush=True,
        )
        seen += 1
    consumer.close()
    if seen < count:
        print(f"read {seen} of {count} records within 60 s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
