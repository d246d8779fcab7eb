"""Kafka clients: cluster checks, topics, offsets, and a confirmed producer.

kafka-python is the design's client. Every producer here uses ``acks=all`` and
idempotence, and counts every delivery: nothing is reported sent unless Kafka
confirmed it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from stockpipe.config import Settings
from stockpipe.errors import DeliveryError, StackError

log = logging.getLogger(__name__)


def cluster_ready(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when a broker answers a metadata request and a controller is known."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            client_id="stockpipe-health",
        )
    except Exception:
        return False
    try:
        info = admin.describe_cluster()
        return bool(info.get("brokers")) and info.get("controller_id", -1) not in (None, -1)
    except Exception:
        return False
    finally:
        admin.close()


def admin_client(settings: Settings) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers, client_id="stockpipe-admin"
        )
    except KafkaError as exc:
        raise StackError(
            f"Kafka at {settings.bootstrap_servers} cannot be reached ({exc}); "
            "is the stack up? Run `make up`."
        ) from exc


def ensure_topics(
    settings: Settings,
    topics: Iterable[str] | None = None,
    *,
    partitions: int | None = None,
    replication: int | None = None,
    configs: dict[str, str] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    names = list(topics or (settings.topic_bars, settings.topic_ticks))
    rf = replication or settings.replication_factor
    if configs is None and rf > 1:
        # acks=all then needs two copies: one broker may be down, no write is lost
        configs = {"min.insync.replicas": "2"}
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(
                name=t,
                num_partitions=partitions or settings.topic_partitions,
                replication_factor=rf,
                topic_configs=configs or {},
            )
            for t in names
            if t not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new, timeout_ms=30_000)
        return [t.name for t in new]
    finally:
        admin.close()


def create_topic_command(settings: Settings, topic: str) -> str:
    """The shell command that creates ``topic`` as the settings say."""
    return (
        f"kafka-topics.sh --bootstrap-server {settings.bootstrap_servers} --create "
        f"--topic {topic} --partitions {settings.topic_partitions} "
        f"--replication-factor {settings.replication_factor}"
    )


#: Metadata and offset lookups are retried: with one of three brokers down (a rolling
#: restart, a crashed container whose name no longer resolves) the client fails on that
#: node once, then asks another.
_survives_a_broker_down = retry(
    retry=retry_if_exception_type(KafkaError),
    stop=stop_after_attempt(4),
    wait=wait_exponential(multiplier=1, max=8),
    reraise=True,
)


@_survives_a_broker_down
def _topic_names(settings: Settings) -> set[str]:
    """The cluster's topics; retried, so a broker restarting (a rolling restart, one
    of three brokers down) does not fail a producer that is starting."""
    admin = admin_client(settings)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def require_topic(settings: Settings, topic: str) -> bool:
    """Make sure ``topic`` exists before anything is sent to or read from it.

    Kafka here does not create topics on first use (a producer would wait out its
    metadata timeout, then fail every record with UNKNOWN_TOPIC_OR_PART), so a
    missing topic is created with the configured partitions and replication, or,
    when ``create_topics`` is off, is a :class:`StackError` naming the command.
    Returns True when this call created it.
    """
    if topic in _topic_names(settings):
        return False
    if not settings.create_topics:
        raise StackError(
            f"topic {topic!r} does not exist on {settings.bootstrap_servers}, and creating "
            f"topics is off (STOCKPIPE_CREATE_TOPICS=false). Create it with:\n"
            f"  {create_topic_command(settings, topic)}\n"
            "(the local stack's Kafka has no scripts: `stockpipe init` creates the configured "
            "topics, or run the same arguments with java -cp '<kafka>/libs/*' "
            "org.apache.kafka.tools.TopicCommand)"
        )
    created = ensure_topics(settings, [topic])
    log.info(
        "created topic %s (%d partitions, replication %d)",
        topic,
        settings.topic_partitions,
        settings.replication_factor,
    )
    return bool(created)


@contextlib.contextmanager
def _partitions(settings: Settings, topic: str) -> Iterator[tuple[KafkaConsumer, list]]:
    """A consumer and the partitions of ``topic``, which must exist."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise StackError(f"topic {topic!r} does not exist on {settings.bootstrap_servers}")
        yield consumer, [TopicPartition(topic, p) for p in sorted(parts)]
    finally:
        consumer.close()


@_survives_a_broker_down
def offset_bounds(settings: Settings, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """The first and the next offset of every partition of ``topic`` (what it holds now)."""
    with _partitions(settings, topic) as (consumer, tps):
        first = {tp.partition: off for tp, off in consumer.beginning_offsets(tps).items()}
        return first, {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}


@_survives_a_broker_down
def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The next offset of every partition of ``topic``."""
    with _partitions(settings, topic) as (consumer, tps):
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}


def read_all(
    settings: Settings, topic: str, *, idle_timeout_s: float = 5.0
) -> Iterator[tuple[int, int, bytes | None, bytes]]:
    """Every record of a topic from the start: ``(partition, offset, key, value)``."""
    ends = end_offsets(settings, topic)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(idle_timeout_s * 1000),
        max_poll_records=5000,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        remaining = {p for p, end in ends.items() if end > 0}
        for msg in consumer:
            yield msg.partition, msg.offset, msg.key, msg.value
            if msg.offset + 1 >= ends[msg.partition]:
                remaining.discard(msg.partition)
                if not remaining:
                    return
    finally:
        consumer.close()


def read_range(
    settings: Settings,
    topic: str,
    start: dict[int, int],
    end: dict[int, int],
    *,
    timeout_s: float = 60.0,
):
    """The records of ``topic`` from ``start`` (inclusive) to ``end`` (exclusive) per
    partition, as a ``pyarrow.Table`` in the columns Spark's Kafka source gives."""
    import pyarrow as pa

    cols: dict[str, list] = {c: [] for c in ("key", "value", "partition", "offset", "ts", "tt")}
    todo = {p: (start.get(p, 0), e) for p, e in end.items() if e > start.get(p, 0)}
    if todo:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            enable_auto_commit=False,
            max_poll_records=5000,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        try:
            consumer.assign([TopicPartition(topic, p) for p in todo])
            for p, (first, _) in todo.items():
                consumer.seek(TopicPartition(topic, p), first)
            deadline = time.monotonic() + timeout_s
            while todo:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"reading {topic} timed out after {timeout_s:.0f} s with offsets "
                        f"{ {p: f'{a}..{b}' for p, (a, b) in todo.items()} } still unread"
                    )
                for tp, msgs in consumer.poll(timeout_ms=1000).items():
                    stop = todo.get(tp.partition, (0, -1))[1]
                    for m in msgs:
                        if m.offset >= stop:
                            break
                        for c, v in zip(
                            cols.values(),
                            (m.key, m.value, m.partition, m.offset, m.timestamp, m.timestamp_type),
                            strict=True,
                        ):
                            c.append(v)
                    # the position, not the last offset: transaction markers take offsets too
                    if consumer.position(tp) >= stop:
                        todo.pop(tp.partition, None)
                        consumer.pause(tp)
        finally:
            consumer.close()
    n = len(cols["offset"])
    return pa.table(
        {
            "key": pa.array(cols["key"], pa.binary()),
            "value": pa.array(cols["value"], pa.binary()),
            "topic": pa.array([topic] * n, pa.string()),
            "partition": pa.array(cols["partition"], pa.int32()),
            "offset": pa.array(cols["offset"], pa.int64()),
            "timestamp": pa.array(cols["ts"], pa.int64())
            .cast(pa.timestamp("ms", "UTC"))
            .cast(pa.timestamp("us", "UTC")),
            "timestampType": pa.array(cols["tt"], pa.int32()),
        }
    )


@dataclass
class DeliveryReport:
    """What a producer run sent, as Kafka confirmed it."""

    topic: str
    sent: int = 0
    failed: int = 0
    per_key: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


class Delivered:
    """``sent`` and ``failed`` of a run report that holds its :class:`DeliveryReport`."""

    delivery: DeliveryReport

    @property
    def sent(self) -> int:
        return self.delivery.sent

    @property
    def failed(self) -> int:
        return self.delivery.failed


PRODUCER_BACKENDS = ("confluent", "kafka-python")


class ConfirmedProducer:
    """A Kafka producer that counts every confirmation and every failure.

    ``acks=all`` with idempotence: a retried batch is never written twice, and a
    key's records stay in order. Two backends behind one interface:
    ``confluent`` (librdkafka, the default: bench/bench_producer.py measures it several
    times faster) and ``kafka-python`` (pure Python).
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        *,
        client_id: str = "stockpipe",
        backend: str = "confluent",
        linger_ms: int = 20,
    ) -> None:
        from stockpipe.errors import UnknownNameError

        if backend not in PRODUCER_BACKENDS:
            raise UnknownNameError("producer backend", backend, list(PRODUCER_BACKENDS))
        self.topic = topic
        self.backend = backend
        self.report = DeliveryReport(topic=topic)
        self._bootstrap = settings.bootstrap_servers
        self._pending = 0
        if backend == "confluent":
            from confluent_kafka import Producer

            self._producer = Producer(
                {
                    "bootstrap.servers": settings.bootstrap_servers,
                    "client.id": client_id,
                    "acks": "all",
                    "enable.idempotence": True,
                    "compression.type": "lz4",
                    "linger.ms": linger_ms,
                    "batch.size": 1_000_000,
                    "queue.buffering.max.messages": 1_000_000,
                    "queue.buffering.max.kbytes": 512 * 1024,
                    "delivery.timeout.ms": 120_000,
                    "message.max.bytes": 4 * 1024 * 1024,
                    "error_cb": self._client_error,
                }
            )
            # a cluster that is electing a new leader (a broker just died) answers
            # again within seconds: retry before calling Kafka unreachable
            deadline = time.monotonic() + 30
            while not cluster_ready(settings.bootstrap_servers, timeout_s=10):
                if time.monotonic() > deadline:
                    raise StackError(
                        f"Kafka at {settings.bootstrap_servers} cannot be reached; "
                        "is the stack up? Run `make up`."
                    )
                time.sleep(1)
        else:
            try:
                self._producer = KafkaProducer(
                    bootstrap_servers=settings.bootstrap_servers,
                    client_id=client_id,
                    acks="all",
                    enable_idempotence=True,
                    compression_type="lz4",
                    linger_ms=linger_ms,
                    batch_size=512 * 1024,
                    max_in_flight_requests_per_connection=5,
                    retries=2**31 - 1,
                    delivery_timeout_ms=120_000,
                    max_request_size=4 * 1024 * 1024,
                )
            except KafkaError as exc:
                raise StackError(
                    f"Kafka at {settings.bootstrap_servers} cannot be reached ({exc}); "
                    "is the stack up? Run `make up`."
                ) from exc
        try:
            require_topic(settings, topic)
        except BaseException:
            self._producer.close()  # no client threads left behind
            raise
        self._started = time.perf_counter()

    # callbacks ----------------------------------------------------------------------------
    def _client_error(self, err) -> None:
        log.warning("Kafka client: %s", err)

    def _ok_key(self, key: bytes | None) -> None:
        self.report.sent += 1
        if key is not None:
            self.report.per_key[key.decode(errors="replace")] += 1  # any bytes may be a key

    def _failed(self, reason: str) -> None:
        self.report.failed += 1
        self.report.failures[reason[:200]] += 1

    def _confluent_cb(self, err, msg) -> None:
        if err is None:
            self._ok_key(msg.key())
        else:
            self._failed(f"{err.name()}: {err.str()}")

    # sending -----------------------------------------------------------------------------
    def send(self, key: bytes | None, value: bytes) -> None:
        if self.backend == "confluent":
            while True:
                try:
                    self._producer.produce(self.topic, value, key, on_delivery=self._confluent_cb)
                    break
                except BufferError:  # local queue full: serve callbacks, then retry
                    self._producer.poll(0.05)
                except Exception as exc:  # e.g. message too large
                    self._failed(f"{type(exc).__name__}: {exc}")
                    return
            self._pending += 1
            if self._pending >= 2000:
                self._producer.poll(0)
                self._pending = 0
            return
        try:
            fut = self._producer.send(self.topic, key=key, value=value)
        except KafkaError as exc:  # buffer full for too long, record too large, ...
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        fut.add_callback(lambda _md, k=key: self._ok_key(k))
        fut.add_errback(lambda exc: self._failed(f"{type(exc).__name__}: {exc}"))

    def send_many(self, records: Iterable[tuple[bytes | None, bytes]]) -> None:
        if self.backend != "confluent":
            for key, value in records:
                self.send(key, value)
            return
        # The hot path of bulk sends: local names, one poll per 2,000 records.
        produce, poll, topic, cb = (
            self._producer.produce,
            self._producer.poll,
            self.topic,
            self._confluent_cb,
        )
        for n, (key, value) in enumerate(records, 1):
            try:
                produce(topic, value, key, on_delivery=cb)
            except BufferError:
                poll(0.05)
                self.send(key, value)  # retries until the local queue has room
            except Exception as exc:  # e.g. a record larger than message.max.bytes
                self._failed(f"{type(exc).__name__}: {exc}")
            if n % 2000 == 0:
                poll(0)

    def flush(self, timeout_s: float | None = None) -> DeliveryReport:
        if self.backend == "confluent":
            remaining = self._producer.flush(timeout_s if timeout_s is not None else 300)
            if remaining:
                for _ in range(remaining):
                    self._failed("not confirmed before the flush timeout")
        else:
            self._producer.flush(timeout=timeout_s)
        self.report.seconds = time.perf_counter() - self._started
        return self.report

    def close(self, *, raise_on_failure: bool = True) -> DeliveryReport:
        report = self.flush()
        self._producer.close()  # both clients: stop background threads and connections
        if raise_on_failure and report.failed:
            raise DeliveryError(report.failed, report.sent + report.failed, dict(report.failures))
        return report

    def __enter__(self) -> ConfirmedProducer:
        return self

    def __exit__(self, *exc) -> None:
        self.close(raise_on_failure=exc[0] is None)


def topic_id(settings: Settings, topic: str) -> str | None:
    """The topic's unique id (a new one whenever a topic of that name is created again)."""
    from confluent_kafka import KafkaException, TopicCollection
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    future = admin.describe_topics(TopicCollection([topic]), request_timeout=15)[topic]
    try:
        return str(future.result().topic_id)
    except KafkaException as exc:
        raise StackError(f"topic {topic!r} cannot be described: {exc}") from exc
