"""Reads every record of the given topics with confluent-kafka and decodes each one with
the CloudEvents SDK's Kafka binding (binary mode), as a consumer team would; continues the
trace of its `traceparent` header with the OpenTelemetry SDK (W3C propagator).

    python3 cloudevents_reader.py BOOTSTRAP COUNT TOPIC...

Prints one JSON line per record: topic, partition, offset, key, the CloudEvent's
attributes, and its data's `id` and time (`occurred_at`, else `received_at`). Exits non-zero when a record is not a valid CloudEvent or
fewer than COUNT records arrive within 60 s.
"""

import datetime
import json
import sys
import time

from cloudevents.v1.kafka import KafkaMessage, from_binary
from confluent_kafka import Consumer, TopicPartition
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def main() -> int:
    bootstrap, count, topics = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "comm100-bridge-cloudevents-reader",
            "enable.auto.commit": False,
        }
    )
    metadata = consumer.list_topics(timeout=30)
    assignment = [
        TopicPartition(topic, partition, 0)
        for topic in topics
        for partition in metadata.topics[topic].partitions
    ]
    consumer.assign(assignment)
    tracer = TracerProvider().get_tracer("comm100-bridge-test-reader")
    propagator = TraceContextTextMapPropagator()
    seen = 0
    deadline = time.monotonic() + 60
    while seen < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            print(f"consumer error: {message.error()}", file=sys.stderr)
            return 1
        headers = {k: v for k, v in (message.headers() or [])}
        event = from_binary(KafkaMessage(headers, message.key(), message.value()))
        carrier = {k: v.decode() for k, v in headers.items()}
        with tracer.start_as_current_span("consume", context=propagator.extract(carrier)) as span:
            trace_id = f"{span.get_span_context().trace_id:032x}"
            parent = f"{span.parent.span_id:016x}" if span.parent is not None else None
        attributes = event.get_attributes()
        # The CloudEvents spec requires RFC 3339 for `time`.
        parsed = datetime.datetime.fromisoformat(attributes["time"].replace("Z", "+00:00"))
        print(
            json.dumps(
                {
                    "topic": message.topic(),
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "key": message.key().decode() if message.key() is not None else None,
                    "specversion": attributes["specversion"],
                    "id": attributes["id"],
                    "type": attributes["type"],
                    "source": attributes["source"],
                    "time": attributes["time"],
                    "time_utc_ms": int(parsed.timestamp() * 1000),
                    "datacontenttype": attributes.get("datacontenttype"),
                    "data_id": event.get_data()["id"],
                    "data_time": event.get_data()["occurred_at"] or event.get_data()["received_at"],
                    "trace_id": trace_id,
                    "parent_span_id": parent,
                }
            ),
            flush=True,
        )
        seen += 1
    consumer.close()
    if seen < count:
        print(f"only {seen} of {count} records within 60 s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
