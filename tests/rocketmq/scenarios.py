"""Scenarios of the official RocketMQ 5 Python client against a wasmq broker, run by
tests/it/rocketmq.rs, which checks the outcome through wasmq's own client.

    scenarios.py ENDPOINT send TOPIC          sends of the four message types
    scenarios.py ENDPOINT transaction TOPIC   commit, rollback, and check-backs answered
    scenarios.py ENDPOINT simple TOPIC        SimpleConsumer: receive with a tag filter, ack,
                                              change the invisible time, redelivery
    scenarios.py ENDPOINT push TOPIC          PushConsumer: successes, and a failing message
                                              retried with backoff until the broker gives up
    scenarios.py ENDPOINT restart TOPIC N     SimpleConsumer through a broker restart: receive
                                              N messages, acking all but every tenth at first
    scenarios.py ENDPOINT auth TOPIC AK SK    a send signed with access key AK and secret SK
                                              ("-" for none): did it go through?
    scenarios.py ENDPOINT fifo TOPIC GROUP K M
                                              FIFO: K message groups of M messages each, then
                                              two SimpleConsumers of the FIFO consumer group
                                              GROUP; the first abandons its first batch
    scenarios.py ENDPOINT renew TOPIC         a receive with auto_renew stays hidden past its
                                              invisible time; its first handle acks it
    scenarios.py ENDPOINT cluster TOPIC N GROUP
                                              N messages sent, then received and acked
                                              (SimpleConsumer of GROUP) and consumed
                                              (PushConsumer of GROUP-push), each client given
                                              ENDPOINT alone: routes lead to every broker set
    scenarios.py ENDPOINT errors TOPIC MAX FIFO_TOPIC
                                              bad requests, through the client's own generated
                                              gRPC stubs, each answered with its status (MAX:
                                              the broker's body limit; FIFO_TOPIC: a topic of
                                              message type FIFO)

Each prints one JSON object per line for the test to read. Trust the broker's CA with
GRPC_DEFAULT_SSL_ROOTS_FILE_PATH.
"""
import json
import sys
import threading
import time

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials,
                      FilterExpression, Message, MessageListener, Producer,
                      PushConsumer, SimpleConsumer, TransactionChecker,
                      TransactionResolution)


OUT = threading.Lock()


def out(**fields):
    # One whole line at a time: scenarios print from several threads, and print() writes the
    # text and its newline separately.
    line = json.dumps(fields) + "\n"
    with OUT:
        sys.stdout.write(line)
        sys.stdout.flush()


def config(endpoint):
    # No access keys configured on the broker: anonymous (empty) credentials.
    return ClientConfiguration(endpoint, Credentials())


def message(topic, body, tag=None, keys=None, group=None, deliver_at=None, props=None):
    m = Message()
    m.topic = topic
    m.body = body.encode()
    if tag:
        m.tag = tag
    if keys:
        m.keys = keys
    if group:
        m.message_group = group
    if deliver_at:
        m.delivery_timestamp = deliver_at
    for k, v in (props or {}).items():
        m.add_property(k, v)
    return m


def receipt(kind, body, r, **extra):
    # The client's MessageQueue shows its id only in its text, "<broker>.<topic>.<queue id>".
    queue = int(str(r.message_queue).rsplit(".", 1)[1])
    out(type=kind, body=body, message_id=r.message_id, offset=r.offset, queue=queue, **extra)


def send(endpoint, topic):
    p = Producer(config(endpoint), (topic,), tls_enable=True)
    p.startup()
    try:
        r = p.send(message(topic, "normal-1", tag="paid", keys="order-1", props={"region": "eu"}))
        receipt("NORMAL", "normal-1", r)
        for i in range(3):
            for group in ("order-7", "order-8"):
                body = f"{group}-{i}"
                receipt("FIFO", body, p.send(message(topic, body, group=group)), group=group)
        # delivery_timestamp is in seconds: at least 2 s from now.
        deliver_at = int(time.time()) + 3
        r = p.send(message(topic, "delay-1", deliver_at=deliver_at))
        receipt("DELAY", "delay-1", r, deliver_at_ms=deliver_at * 1000, sent_ms=int(time.time() * 1000))
        # Another one, recalled before its time (and a second recall of it refused).
        r = p.send(message(topic, "recall-me", deliver_at=deliver_at))
        out(type="RECALLED", message_id=r.message_id, recalled=p.recall_message(topic, r.recall_handle))
        try:
            p.recall_message(topic, r.recall_handle)
            out(type="RECALLED AGAIN", error=None)
        except Exception as e:
            out(type="RECALLED AGAIN", error=str(e)[:300])
    finally:
        p.shutdown()


class Checker(TransactionChecker):
    """Answers the broker's check-back by the body: check-commit-* commit, the rest roll back."""

    def __init__(self):
        self.checked = []
        self.lock = threading.Lock()

    def check(self, message):
        body = message.body.decode()
        with self.lock:
            self.checked.append(body)
        if body.startswith("check-commit"):
            return TransactionResolution.COMMIT
        return TransactionResolution.ROLLBACK


def transaction(endpoint, topic):
    checker = Checker()
    p = Producer(config(endpoint), (topic,), checker=checker, tls_enable=True)
    p.startup()
    try:
        for body, end in (("tx-commit", "commit"), ("tx-rollback", "rollback"),
                          ("check-commit", None), ("check-rollback", None)):
            t = p.begin_transaction()
            r = p.send(message(topic, body, keys=body), t)
            if end == "commit":
                t.commit()
            elif end == "rollback":
                t.rollback()
            receipt("TRANSACTION", body, r, transaction_id=r.transaction_id, ended=end or "left open")
        # The broker asks about the two left open; the checker's answers go back as EndTransaction.
        deadline = time.time() + 30
        while time.time() < deadline:
            with checker.lock:
                if {"check-commit", "check-rollback"} <= set(checker.checked):
                    break
            time.sleep(0.1)
        time.sleep(1)  # let the answers to the last check go out
        with checker.lock:
            out(checked=sorted(set(checker.checked)))
    finally:
        p.shutdown()


def received(m, step):
    out(step=step, body=m.body.decode(), tag=m.tag, message_id=m.message_id,
        attempt=m.delivery_attempt)


def simple(endpoint, topic):
    """Six messages, four tagged "a": the consumer (filter "a") gets those four, acks two at
    once, renews one then acks it, and leaves one to come back after its invisible time."""
    p = Producer(config(endpoint), (topic,), tls_enable=True)
    p.startup()
    try:
        for i in range(6):
            p.send(message(topic, f"s-{i}", tag="a" if i < 4 else "b"))
    finally:
        p.shutdown()
    c = SimpleConsumer(config(endpoint), "rmq-simple", {topic: FilterExpression("a")},
                       await_duration=5, tls_enable=True)
    c.startup()
    try:
        got = {}
        deadline = time.time() + 30
        while len(got) < 4 and time.time() < deadline:
            for m in c.receive(16, 2):
                received(m, "first")
                got[m.body.decode()] = m
        for body in ("s-0", "s-1"):
            c.ack(got[body])
        # s-3: renewed (a new receipt handle), then acknowledged with it.
        c.change_invisible_duration(got["s-3"], 10)
        c.ack(got["s-3"])
        out(acked=["s-0", "s-1", "s-3"])
        # s-2 is left: after its 2 s it is delivered again, attempt 2.
        again = []
        while not again and time.time() < deadline:
            again = c.receive(16, 2)
        for m in again:
            received(m, "again")
            c.ack(m)
    finally:
        c.shutdown()


def fifo(endpoint, topic):
    """K message groups of M messages each, sent in order; two SimpleConsumers of a FIFO group
    receive, process (20 ms) and ack them. Prints every processing (consumer, body, attempt, its start
    and the end of its processing, before the ack, in ns) and, for the first consumer's first batch, which it abandons unacked
    (as a crashed consumer would), each message it held."""
    group, k, m = sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
    p = Producer(config(endpoint), (topic,), tls_enable=True)
    p.startup()
    try:
        for seq in range(m):
            for g in range(k):
                p.send(message(topic, f"g{g}:{seq}", group=f"g{g}"))
    finally:
        p.shutdown()
    total = k * m
    done = []
    lock = threading.Lock()

    def consume(name, abandon_first):
        c = SimpleConsumer(config(endpoint), group, {topic: FilterExpression()},
                           await_duration=2, tls_enable=True)
        c.startup()
        try:
            deadline = time.time() + 60
            while time.time() < deadline:
                with lock:
                    if len(done) >= total:
                        return
                batch = c.receive(8, 3)
                if abandon_first and batch:
                    abandon_first = False
                    for msg in batch:
                        out(abandoned=name, body=msg.body.decode(), attempt=msg.delivery_attempt)
                    continue
                for msg in batch:
                    start = time.monotonic_ns()
                    time.sleep(0.02)
                    # Processed: only now may the broker hand out what follows it.
                    processed = time.monotonic_ns()
                    c.ack(msg)
                    with lock:
                        done.append(msg.body.decode())
                    out(consumer=name, body=msg.body.decode(), group=msg.message_group,
                        attempt=msg.delivery_attempt, start=start, processed=processed)
        finally:
            c.shutdown()

    threads = [threading.Thread(target=consume, args=(n, n == "c1")) for n in ("c1", "c2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Recorder(MessageListener):
    """Records every delivery; fails the messages whose body starts with "fail"."""

    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()

    def consume(self, message):
        body = message.body.decode()
        with self.lock:
            self.seen.append((body, message.delivery_attempt, message.topic, message.tag,
                              dict(message.properties or {})))
        return ConsumeResult.FAILURE if body.startswith("fail") else ConsumeResult.SUCCESS


def push(endpoint, topic):
    """Three messages that succeed and one that always fails; ATTEMPTS (argv[4]) deliveries of
    the failing one and OKS (argv[5]) successful messages in all (those sent here and any the
    test sent before) are awaited, then a little longer to see that no more come."""
    attempts, oks_wanted = int(sys.argv[4]), int(sys.argv[5])
    p = Producer(config(endpoint), (topic,), tls_enable=True)
    p.startup()
    try:
        for body in ("ok-0", "ok-1", "ok-2", "fail-0"):
            p.send(message(topic, body))
    finally:
        p.shutdown()
    recorder = Recorder()
    c = PushConsumer(config(endpoint), "rmq-push", recorder, {topic: FilterExpression()},
                     tls_enable=True)
    c.startup()
    try:
        deadline = time.time() + 40
        while time.time() < deadline:
            with recorder.lock:
                fails = sum(1 for seen in recorder.seen if seen[0] == "fail-0")
                oks = {seen[0] for seen in recorder.seen if not seen[0].startswith("fail")}
            if fails >= attempts and len(oks) >= oks_wanted:
                break
            time.sleep(0.1)
        time.sleep(2)
    finally:
        c.shutdown()
    with recorder.lock:
        for body, attempt, t, tag, props in recorder.seen:
            out(step="consumed", body=body, attempt=attempt, topic=t, tag=tag, properties=props)


def restart(endpoint, topic):
    """Receives until each of N messages ("r-0" …) is acknowledged, leaving every tenth
    unacknowledged at its first delivery (it must come back), carrying on through errors while
    the broker restarts. Prints every delivery and every failed call. An ack whose call failed
    may still have reached the broker before it died (then the message is done and never comes
    back): such a message counts as settled once it has not come back for QUIET seconds after
    everything else was acknowledged — the test then asks the broker whether it was acked."""
    n = int(sys.argv[4])
    quiet = 8  # well past the 3 s invisible time of a receive
    c = SimpleConsumer(config(endpoint), "rmq-restart", {topic: FilterExpression()},
                       await_duration=2, tls_enable=True)
    c.startup()
    acked, uncertain = set(), set()
    deadline = time.time() + 120
    last_delivery = time.time()
    try:
        while time.time() < deadline:
            if len(acked) >= n:
                break
            if len(acked | uncertain) >= n and time.time() - last_delivery > quiet:
                break
            try:
                got = c.receive(32, 3)
            except Exception as e:  # the broker is down: try again
                out(step="error", call="receive", error=str(e)[:200])
                time.sleep(0.2)
                continue
            if not got:
                out(step="empty", acked=len(acked), t=round(time.time(), 3))
            for m in got:
                last_delivery = time.time()
                body = m.body.decode()
                leave = int(body.split("-")[1]) % 10 == 0 and m.delivery_attempt == 1 and body not in acked
                ok = False
                if not leave:
                    try:
                        c.ack(m)
                        ok = True
                        acked.add(body)
                    except Exception as e:
                        uncertain.add(body)
                        out(step="error", call="ack", body=body, error=str(e)[:200])
                out(step="received", body=body, attempt=m.delivery_attempt, acked=ok)
    finally:
        c.shutdown()
    out(step="done", acked=len(acked), uncertain=sorted(uncertain - acked))


def cluster(endpoint, topic):
    """N messages (argv[4]) "c-0" … through a producer that knows ENDPOINT alone, then a
    SimpleConsumer of GROUP (argv[5]), also knowing ENDPOINT alone, receives and acks each, and
    a PushConsumer of GROUP-push consumes each. Prints each send (with the broker set its queue
    is on), each receipt and each push delivery."""
    n, group = int(sys.argv[4]), sys.argv[5]
    p = Producer(config(endpoint), (topic,), tls_enable=True)
    p.startup()
    try:
        for i in range(n):
            r = p.send(message(topic, f"c-{i}"))
            out(step="sent", body=f"c-{i}", broker=str(r.message_queue).split(".", 1)[0])
    finally:
        p.shutdown()
    c = SimpleConsumer(config(endpoint), group, {topic: FilterExpression()},
                       await_duration=1, tls_enable=True)
    c.startup()
    acked = set()
    try:
        deadline = time.time() + 90
        while len(acked) < n and time.time() < deadline:
            for m in c.receive(32, 10):
                c.ack(m)
                acked.add(m.body.decode())
                out(step="received", body=m.body.decode(), attempt=m.delivery_attempt)
    finally:
        c.shutdown()
    # A PushConsumer of another group takes them all too (its assignments: every broker set).
    recorder = Recorder()
    pc = PushConsumer(config(endpoint), group + "-push", recorder, {topic: FilterExpression()},
                      tls_enable=True)
    pc.startup()
    try:
        while time.time() < deadline:
            with recorder.lock:
                if len({seen[0] for seen in recorder.seen}) >= n:
                    break
            time.sleep(0.1)
    finally:
        pc.shutdown()
    with recorder.lock:
        for body, attempt, _, _, _ in recorder.seen:
            out(step="pushed", body=body, attempt=attempt)


def auth(endpoint, topic):
    """A producer whose requests the client signs with AK/SK; when it cannot start, the same
    signed request (the client's own signing code) made through the stubs shows the broker's
    answer, which the client's exception does not carry: a gRPC status when the signature is
    refused, a RocketMQ status inside the answer when the policies refuse the user."""
    import grpc
    from rocketmq.grpc_protocol import MessagingServiceStub, QueryRouteRequest
    from rocketmq.v5.util.signature import Signature
    ak, sk = ("" if a == "-" else a for a in sys.argv[4:6])
    cfg = ClientConfiguration(endpoint, Credentials(ak, sk))
    try:
        p = Producer(cfg, (topic,), tls_enable=True)
        p.startup()
        try:
            r = p.send(message(topic, f"signed by {ak or 'nobody'}"))
            out(ok=True, message_id=r.message_id)
        finally:
            p.shutdown()
        return
    except Exception as e:
        failure = str(e)
    stub = MessagingServiceStub(grpc.secure_channel(endpoint, grpc.ssl_channel_credentials()))
    req = QueryRouteRequest()
    req.topic.name = topic
    try:
        r = stub.QueryRoute(req, metadata=Signature.metadata(cfg, "auth-scenario"), timeout=10)
        # Authenticated, but refused by the broker's policies: a status inside the answer.
        out(ok=False, client_error=failure, code="OK", status=r.status.code, error=r.status.message)
    except grpc.RpcError as e:
        out(ok=False, client_error=failure, code=e.code().name, error=e.details())


def stub_of(endpoint, client_id):
    """The client's own generated gRPC stub, and the metadata naming the client."""
    import grpc
    from rocketmq.grpc_protocol import MessagingServiceStub
    channel = grpc.secure_channel(endpoint, grpc.ssl_channel_credentials())
    return MessagingServiceStub(channel), (("x-mq-client-id", client_id), ("x-mq-language", "PYTHON"))


def renew(endpoint, topic):
    """ReceiveMessage with auto_renew and a 2 s invisible time, as a PushConsumer receives (it
    renews nothing itself): 6 s later the message is still hidden from the group, and the
    original receipt handle acknowledges it. Prints each step's outcome."""
    from rocketmq.grpc_protocol import (AckMessageEntry, AckMessageRequest, Code,
                                        HeartbeatRequest, ReceiveMessageRequest)
    stub, meta = stub_of(endpoint, "renew-scenario")
    p = Producer(config(endpoint), (topic,), tls_enable=True)
    p.startup()
    try:
        p.send(message(topic, "renew-me"))
    finally:
        p.shutdown()

    def receive(auto_renew):
        req = ReceiveMessageRequest()
        req.group.name = "rmq-renew"
        req.message_queue.topic.name = topic
        req.batch_size = 1
        req.auto_renew = auto_renew
        req.invisible_duration.seconds = 2
        req.long_polling_timeout.seconds = 2
        got = [r for r in stub.ReceiveMessage(req, metadata=meta, timeout=10)]
        return [r.message for r in got if r.WhichOneof("content") == "message"]

    def heartbeat():
        hb = HeartbeatRequest()
        hb.group.name = "rmq-renew"
        stub.Heartbeat(hb, metadata=meta, timeout=10)

    heartbeat()
    first = receive(True)
    out(step="received", bodies=[m.body.decode() for m in first])
    for _ in range(6):
        time.sleep(1)
        heartbeat()
    out(step="after 6 s", bodies=[m.body.decode() for m in receive(False)])
    req = AckMessageRequest()
    req.group.name = "rmq-renew"
    req.topic.name = topic
    handle = first[0].system_properties.receipt_handle
    req.entries.append(AckMessageEntry(message_id=first[0].system_properties.message_id, receipt_handle=handle))
    r = stub.AckMessage(req, metadata=meta, timeout=10)
    out(step="ack with the first handle", code=Code.Name(r.entries[0].status.code))


def errors(endpoint, topic):
    """Requests a well-behaved client would not send, straight through the gRPC stubs that ship
    with the client; prints each answer's status code and text."""
    import grpc
    from rocketmq.grpc_protocol import (AckMessageEntry, AckMessageRequest, Code,
                                        ReceiveMessageRequest, SendMessageRequest)
    stub, meta = stub_of(endpoint, "errors-scenario")

    def status(name, s):
        out(case=name, code=Code.Name(s.code), message=s.message)

    def send(name, topic_name, body):
        req = SendMessageRequest()
        m = req.messages.add()
        m.topic.name = topic_name
        m.body = body
        m.system_properties.message_id = f"errors-{name}"
        m.system_properties.message_type = 1  # NORMAL
        r = stub.SendMessage(req, metadata=meta, timeout=10)
        status(name, r.entries[0].status if r.entries else r.status)

    send("unknown topic", "no-such-topic", b"x")
    send("oversized body", topic, b"x" * (int(sys.argv[4]) + 1))
    fifo_topic = sys.argv[5]
    send("normal message to a FIFO topic", fifo_topic, b"x")
    from rocketmq.grpc_protocol import Endpoints, MessageType, QueryRouteRequest
    route = QueryRouteRequest()
    route.topic.name = fifo_topic
    host, port = endpoint.rsplit(":", 1)
    route.endpoints.CopyFrom(Endpoints(addresses=[{"host": host, "port": int(port)}]))
    r = stub.QueryRoute(route, metadata=meta, timeout=10)
    out(case="route of a FIFO topic", code=Code.Name(r.status.code),
        accepts=sorted({MessageType.Name(t) for q in r.message_queues for t in q.accept_message_types}))

    def receive(group):
        req = ReceiveMessageRequest()
        req.group.name = group
        req.message_queue.topic.name = topic
        req.batch_size = 1
        req.invisible_duration.seconds = 30
        req.long_polling_timeout.seconds = 1
        got = [r for r in stub.ReceiveMessage(req, metadata=meta, timeout=10)]
        return [r.message for r in got if r.WhichOneof("content") == "message"]

    def ack(name, group, handle):
        req = AckMessageRequest()
        req.group.name = group
        req.topic.name = topic
        req.entries.append(AckMessageEntry(message_id="m", receipt_handle=handle))
        r = stub.AckMessage(req, metadata=meta, timeout=10)
        status(name, r.entries[0].status)

    send("a message to receive", topic, b"to receive")
    handle = receive("errors-a")[0].system_properties.receipt_handle
    ack("receipt handle of another group", "errors-b", handle)
    ack("first ack", "errors-a", handle)
    ack("stale receipt handle", "errors-a", handle)
    ack("garbage receipt handle", "errors-a", "not-a-handle")
    from rocketmq.grpc_protocol import service_pb2
    try:
        list(stub.PullMessage(service_pb2.PullMessageRequest(), metadata=meta, timeout=10))
    except grpc.RpcError as e:
        out(case="PullMessage", code=e.code().name, message=e.details())


if __name__ == "__main__":
    endpoint, scenario, topic = sys.argv[1:4]
    {"send": send, "transaction": transaction, "simple": simple, "push": push,
     "restart": restart, "auth": auth, "errors": errors, "fifo": fifo,
     "renew": renew, "cluster": cluster}[scenario](endpoint, topic)
