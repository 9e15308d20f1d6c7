"""The checks ``swarmctl verify`` runs inside a probe container on an overlay network.

Sent as ``python3 -c <this file> <plan JSON>``; prints one JSON object. Standard library only and
Python 3.6+, so any image with python3 can be the probe. Plan::

    {"dns": ["web", "tasks.web"], "tcp": [["10.0.1.2", 80]],
     "zookeeper": [["zookeeper-1", 2181]], "kafka": [["kafka-1", 9092]], "quorum": [["controller-1", 9093]],
     "produce": {"brokers": [["kafka-1", 9092, 1]], "topic": "...", "replication": 3, "standalone": false}}

DNS goes straight to Docker's embedded server (127.0.0.11) so that "no such name" and "no
answer" are told apart.
"""

import json
import random
import re
import socket
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor

DNS_SERVER = ("127.0.0.11", 53)


def dns_a(name, attempts=3, timeout=1.0):
    """A records of name: {"ips": [...]} or {"error": "NXDOMAIN" | "timeout" | ...}."""
    qid = random.randint(0, 0xFFFF)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\x00"
    query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    last = "timeout"
    for _ in range(attempts):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(timeout)
        try:
            s.sendto(query, DNS_SERVER)
            data, _ = s.recvfrom(4096)
        except TimeoutError:
            last = "timeout"
            continue
        except OSError as e:
            last = f"error: {e}"
            continue
        finally:
            s.close()
        rid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", data[:12])
        if rid != qid:
            continue
        rcode = flags & 0xF
        if rcode == 3:
            return {"error": "NXDOMAIN"}
        if rcode:
            return {"error": f"rcode {rcode}"}
        pos = 12
        for _ in range(qd):
            pos = _skip_name(data, pos) + 4
        ips = []
        for _ in range(an):
            pos = _skip_name(data, pos)
            rtype, _, _, rdlen = struct.unpack(">HHIH", data[pos : pos + 10])
            pos += 10
            if rtype == 1 and rdlen == 4:
                ips.append(socket.inet_ntoa(data[pos : pos + 4]))
            pos += rdlen
        return {"ips": sorted(set(ips))}
    return {"error": last}


def _skip_name(data, pos):
    while True:
        n = data[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            return pos + 2
        pos += n + 1


def resolve(host):
    """An address for host through the embedded DNS (fast failure), or raise OSError."""
    try:
        socket.inet_aton(host)
        return host
    except OSError:
        pass
    answer = dns_a(host)
    if not answer.get("ips"):
        raise OSError(f"{host} does not resolve ({answer.get('error', 'no address')})")
    return answer["ips"][0]


def tcp(host, port, timeout=2.0):
    start = time.time()
    try:
        s = socket.create_connection((resolve(host), port), timeout=timeout)
        s.close()
        return {"result": "open", "ms": int((time.time() - start) * 1000)}
    except TimeoutError:
        return {"result": "timeout"}
    except ConnectionRefusedError:
        return {"result": "refused"}
    except OSError as e:
        return {"result": "error", "detail": str(e)}


def _recv_all(s, limit=1 << 20):
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        if sum(len(c) for c in chunks) > limit:
            break
    return b"".join(chunks)


def zookeeper(host, port, timeout=3.0):
    """The `srvr` four-letter word: mode (leader/follower/standalone) and zxid."""
    try:
        s = socket.create_connection((resolve(host), port), timeout=timeout)
        s.sendall(b"srvr")
        text = _recv_all(s).decode("utf-8", "replace")
        s.close()
    except OSError as e:
        return {"error": str(e) or type(e).__name__}
    out = {"raw": text[:400]}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Mode":
            out["mode"] = value.strip()
        elif key.strip() == "Zxid":
            out["zxid"] = value.strip()
    if "mode" not in out:
        out["error"] = (text.strip() or "no answer to srvr").splitlines()[0][:200]
    return out


def _kafka_request(s, api_key, version, correlation, body):
    client = b"swarmctl-verify"
    header = struct.pack(">hhih", api_key, version, correlation, len(client)) + client
    msg = header + body
    s.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", _exact(s, 4))[0]
    data = _exact(s, size)
    if struct.unpack(">i", data[:4])[0] != correlation:
        raise ValueError("correlation id mismatch")
    return data[4:]


def _exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ValueError("connection closed")
        buf += chunk
    return buf


class _R:
    def __init__(self, data):
        self.d, self.p = data, 0

    def i8(self):
        self.p += 1
        return struct.unpack(">b", self.d[self.p - 1 : self.p])[0]

    def i16(self):
        self.p += 2
        return struct.unpack(">h", self.d[self.p - 2 : self.p])[0]

    def i32(self):
        self.p += 4
        return struct.unpack(">i", self.d[self.p - 4 : self.p])[0]

    def s(self):
        n = self.i16()
        if n < 0:
            return None
        self.p += n
        return self.d[self.p - n : self.p].decode("utf-8", "replace")

    def ints(self):
        return [self.i32() for _ in range(self.i32())]


def kafka(host, port, timeout=5.0):
    """ApiVersions v0 and Metadata v1 over the Kafka protocol."""
    try:
        s = socket.create_connection((resolve(host), port), timeout=timeout)
    except OSError as e:
        return {"error": f"cannot connect: {str(e) or type(e).__name__}"}
    try:
        r = _R(_kafka_request(s, 18, 0, 1, b""))
        error = r.i16()
        apis = r.i32()
        keys = []
        for _ in range(max(apis, 0)):
            keys.append(r.i16())
            r.p += 4  # min and max version
        out = {"api_versions": {"error_code": error, "apis": apis, "keys": keys}}
        r = _R(_kafka_request(s, 3, 1, 2, struct.pack(">i", -1)))
        brokers = []
        for _ in range(r.i32()):
            brokers.append({"id": r.i32(), "host": r.s(), "port": r.i32(), "rack": r.s()})
        controller = r.i32()
        topics = []
        for _ in range(r.i32()):
            t_error, name, internal = r.i16(), r.s(), r.i8()
            partitions = []
            for _ in range(r.i32()):
                p_error, index, leader = r.i16(), r.i32(), r.i32()
                replicas, isr = r.ints(), r.ints()
                partitions.append(
                    {"index": index, "leader": leader, "replicas": replicas, "isr": isr, "error": p_error}
                )
            topics.append({"name": name, "error": t_error, "internal": bool(internal), "partitions": partitions})
        out["metadata"] = {"brokers": brokers, "controller": controller, "topics": topics}
        return out
    except (OSError, ValueError, struct.error) as e:
        return {"error": str(e) or type(e).__name__}
    finally:
        s.close()


def _uvarint(r):
    shift = value = 0
    while True:
        b = r.i8() & 0xFF
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value
        shift += 7


def _skip_tags(r):
    for _ in range(_uvarint(r)):
        _uvarint(r)
        r.p += _uvarint(r)


def _compact_string(r):
    n = _uvarint(r) - 1
    r.p += max(n, 0)
    return None if n < 0 else r.d[r.p - n : r.p].decode("utf-8", "replace")


def _i64(r):
    r.p += 8
    return struct.unpack(">q", r.d[r.p - 8 : r.p])[0]


def quorum(host, port, timeout=5.0):
    """DescribeQuorum v1 (Kafka API 55) of the KRaft metadata log, asked of one controller: the
    leader answers with the voters and observers, the others with NOT_LEADER_OR_FOLLOWER."""
    try:
        s = socket.create_connection((resolve(host), port), timeout=timeout)
    except OSError as e:
        return {"error": f"cannot connect: {str(e) or type(e).__name__}"}
    try:
        topic = b"__cluster_metadata"
        # flexible request header v2 (client id, then no tagged fields); topics[1]: name, partitions[1]: 0
        body = bytes([2, len(topic) + 1]) + topic + bytes([2]) + struct.pack(">i", 0) + b"\x00\x00\x00"
        client = b"swarmctl-verify"
        msg = struct.pack(">hhih", 55, 1, 3, len(client)) + client + b"\x00" + body
        s.sendall(struct.pack(">i", len(msg)) + msg)
        data = _exact(s, struct.unpack(">i", _exact(s, 4))[0])
        r = _R(data)
        if r.i32() != 3:
            raise ValueError("correlation id mismatch")
        _skip_tags(r)  # response header v1
        out = {"top_error": r.i16()}
        for _ in range(_uvarint(r) - 1):
            _compact_string(r)
            for _ in range(_uvarint(r) - 1):
                p = {"partition": r.i32(), "error_code": r.i16(), "leader": r.i32(), "epoch": r.i32(),
                     "high_watermark": _i64(r)}  # fmt: skip
                for kind in ("voters", "observers"):
                    replicas = []
                    for _ in range(_uvarint(r) - 1):
                        replicas.append({"id": r.i32(), "log_end_offset": _i64(r), "last_fetch": _i64(r),
                                         "last_caught_up": _i64(r)})  # fmt: skip
                        _skip_tags(r)
                    p[kind] = replicas
                _skip_tags(r)
                if p["partition"] == 0:
                    out.update(p)
            _skip_tags(r)
        return out
    except (OSError, ValueError, struct.error, IndexError) as e:
        return {"error": str(e) or type(e).__name__}
    finally:
        s.close()


# -- produce and read back (verify --produce) ----------------------------------------------------

KAFKA_ERRORS = {
    0: "none", 3: "UNKNOWN_TOPIC_OR_PARTITION", 5: "LEADER_NOT_AVAILABLE", 6: "NOT_LEADER_OR_FOLLOWER",
    7: "REQUEST_TIMED_OUT", 19: "NOT_ENOUGH_REPLICAS", 20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    36: "TOPIC_ALREADY_EXISTS", 37: "INVALID_PARTITIONS", 38: "INVALID_REPLICATION_FACTOR", 41: "NOT_CONTROLLER",
}  # fmt: skip


def _error_name(code):
    return KAFKA_ERRORS.get(code, f"error {code}")


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli), the checksum of Kafka's record batches."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _varint(n):
    n = (n << 1) ^ (n >> 63)  # zigzag
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def _read_varint(data, pos):
    shift = n = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return (n >> 1) ^ -(n & 1), pos


def record_batch(value, timestamp_ms):
    """One uncompressed record (no key, no headers) in a magic-2 record batch."""
    body = b"\x00" + _varint(0) + _varint(0) + _varint(-1) + _varint(len(value)) + value + _varint(0)
    record = _varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", 0, 0, timestamp_ms, timestamp_ms, -1, -1, -1, 1) + record
    head = struct.pack(">ib", -1, 2) + struct.pack(">I", crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(head)) + head


def batch_values(records):
    """The (offset, value) of every record in a fetch response's record set (magic 2, uncompressed)."""
    out, pos = [], 0
    while pos + 12 <= len(records):
        base, length = struct.unpack(">qi", records[pos : pos + 12])
        end = pos + 12 + length
        if end > len(records):
            break  # a partial batch at the end of a fetch
        magic = records[pos + 16]
        attributes = struct.unpack(">h", records[pos + 21 : pos + 23])[0]
        if magic == 2 and not attributes & 0x7:
            count = struct.unpack(">i", records[pos + 57 : pos + 61])[0]
            p = pos + 61
            for _ in range(count):
                length_r, p = _read_varint(records, p)
                start = p
                p += 1  # attributes
                _, p = _read_varint(records, p)  # timestamp delta
                delta, p = _read_varint(records, p)
                key_len, p = _read_varint(records, p)
                p += max(key_len, 0)
                value_len, p = _read_varint(records, p)
                out.append((base + delta, records[p : p + max(value_len, 0)]))
                p = start + length_r
        pos = end
    return out


def _str(text):
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


class _Kafka:
    """One connection to one broker, for the few requests verify --produce makes."""

    def __init__(self, host, port, timeout=10.0):
        self.where = f"{host}:{port}"
        self.sock = socket.create_connection((resolve(host), port), timeout=timeout)
        self.correlation = 100

    def call(self, api_key, version, body):
        self.correlation += 1
        return _R(_kafka_request(self.sock, api_key, version, self.correlation, body))

    def metadata(self, topic):
        """Metadata v4 for one topic, with auto-creation off: (brokers, controller, leaders).

        v4, not v1: with v1 a broker with auto.create.topics.enable (Kafka's default) would
        create the topic on the first look, with its default partitions and replication."""
        r = self.call(3, 4, struct.pack(">i", 1) + _str(topic) + b"\x00")
        r.i32()  # throttle time
        brokers = {}
        for _ in range(r.i32()):
            bid, host, port, _rack = r.i32(), r.s(), r.i32(), r.s()
            brokers[bid] = (host, port)
        r.s()  # cluster id
        controller = r.i32()
        leaders = {}
        for _ in range(r.i32()):
            r.i16(), r.s(), r.i8()
            for _ in range(r.i32()):
                p_error, index, leader = r.i16(), r.i32(), r.i32()
                r.ints(), r.ints()
                if p_error == 0 and leader >= 0:
                    leaders[index] = leader
        return brokers, controller, leaders

    def topic_names(self):
        """Every topic's name (Metadata v4, all topics, no auto-creation)."""
        r = self.call(3, 4, struct.pack(">i", -1) + b"\x00")
        r.i32()
        for _ in range(r.i32()):
            r.i32(), r.s(), r.i32(), r.s()
        r.s(), r.i32()
        names = []
        for _ in range(r.i32()):
            r.i16()
            names.append(r.s())
            r.i8()
            for _ in range(r.i32()):
                r.i16(), r.i32(), r.i32()
                r.ints(), r.ints()
        return names

    def create_topic(self, topic, partitions, replication):
        body = struct.pack(">i", 1) + _str(topic) + struct.pack(">ihii", partitions, replication, 0, 0)
        r = self.call(19, 2, body + struct.pack(">ib", 15000, 0))
        r.i32()
        for _ in range(r.i32()):
            r.s()
            code = r.i16()
            message = r.s()
            if code not in (0, 36):
                raise ValueError(f"creating the topic: {_error_name(code)}" + (f" ({message})" if message else ""))

    def delete_topic(self, topic):
        r = self.call(20, 1, struct.pack(">i", 1) + _str(topic) + struct.pack(">i", 15000))
        r.i32()
        codes = []
        for _ in range(r.i32()):
            r.s()
            codes.append(r.i16())
        return codes

    def produce(self, topic, partition, value):
        batch = record_batch(value, int(time.time() * 1000))
        data = struct.pack(">i", 1) + _str(topic) + struct.pack(">ii", 1, partition) + struct.pack(">i", len(batch))
        r = self.call(0, 3, struct.pack(">hhi", -1, -1, 15000) + data + batch)  # acks=all
        for _ in range(r.i32()):
            r.s()
            for _ in range(r.i32()):
                r.i32()
                code = r.i16()
                offset = struct.unpack(">q", r.d[r.p : r.p + 8])[0]
                r.p += 16
                if code:
                    raise ValueError(f"produce (acks=all) answered {_error_name(code)}")
                return offset
        raise ValueError("produce: no answer for the partition")

    def fetch(self, topic, partition, offset):
        body = struct.pack(">iiiib", -1, 2000, 1, 1 << 20, 0) + struct.pack(">i", 1) + _str(topic)
        body += struct.pack(">iiqi", 1, partition, offset, 1 << 20)
        r = self.call(1, 4, body)
        r.i32()
        for _ in range(r.i32()):
            r.s()
            for _ in range(r.i32()):
                r.i32()
                code = r.i16()
                r.p += 16  # high watermark, last stable offset
                aborted = r.i32()
                r.p += max(aborted, 0) * 16
                size = r.i32()
                records = r.d[r.p : r.p + max(size, 0)]
                r.p += max(size, 0)
                if code:
                    raise ValueError(f"fetch answered {_error_name(code)}")
                return batch_values(records)
        return []

    def close(self):
        self.sock.close()


def _wait_leaders(entry, topic, partitions, deadline):
    while True:
        brokers, _controller, leaders = entry.metadata(topic)
        if len(leaders) >= partitions:
            return brokers, leaders
        if time.time() > deadline:
            raise ValueError(f"{entry.where} does not see a leader for each partition of {topic} (leaders: {leaders})")
        time.sleep(0.5)


VERIFY_TOPIC = re.compile(r"^swarmctl-verify-(\d+)-[0-9a-f]+$")
STALE_AFTER = 600  # seconds: a verify topic this old was left by a run that was killed


def sweep_topics(admin, now):
    """Remove verify topics that killed runs left (named with their creation time); their names."""
    stale = []
    for name in admin.topic_names():
        m = VERIFY_TOPIC.match(name or "")
        if m and int(m.group(1)) < now - STALE_AFTER:
            admin.delete_topic(name)
            stale.append(name)
    return stale


def produce_check(plan):
    """Produce with acks=all through each broker, read back through every other one (or, for
    standalone brokers, through the same one), on a topic made for it and removed afterwards.

    The topic has one partition per broker and the stack's replication factor; each broker
    writes to a partition it leads."""
    brokers = [(h, p, bid) for h, p, bid in plan["brokers"]]
    topic, standalone = plan["topic"], plan.get("standalone", False)
    results, cleanup, swept = {}, [], []
    groups = [[b] for b in brokers] if standalone else [brokers]
    for group in groups:
        replication = 1 if standalone else int(plan.get("replication", 1))
        partitions = len(group)
        conns = {}
        try:
            for h, p, bid in group:
                conns[bid] = _Kafka(h, p)
            first = conns[group[0][2]]
            addresses, controller, _ = first.metadata(topic)
            admin = _connect_to(conns, addresses, controller, first)
            swept += sweep_topics(admin, time.time())
            admin.create_topic(topic, partitions, replication)
            deadline = time.time() + float(plan.get("leader_wait", 20))
            for h, p, bid in group:
                key = f"{h}:{p}"
                try:
                    addresses, leaders = _wait_leaders(conns[bid], topic, partitions, deadline)
                    partition = next((i for i, lead in sorted(leaders.items()) if lead == bid), 0)
                    leader = _connect_to(conns, addresses, leaders[partition], conns[bid])
                    value = f"swarmctl verify via {key} {random.getrandbits(64):016x}".encode()
                    offset = leader.produce(topic, partition, value)
                    readers = [g for g in group if g[2] != bid] or [(h, p, bid)]
                    read = {}
                    for rh, rp, rid in readers:
                        try:
                            r_addresses, r_leaders = _wait_leaders(conns[rid], topic, partitions, deadline)
                            source = _connect_to(conns, r_addresses, r_leaders[partition], conns[rid])
                            got = dict(source.fetch(topic, partition, offset))
                            read[f"{rh}:{rp}"] = "ok" if got.get(offset) == value else "not the message produced"
                        except (OSError, ValueError, KeyError, struct.error) as e:
                            read[f"{rh}:{rp}"] = f"error: {e}"
                    results[key] = {"produced": offset, "partition": partition, "leader": leaders[partition],
                                    "replication": replication, "read": read}  # fmt: skip
                except (OSError, ValueError, KeyError, struct.error) as e:
                    results[key] = {"error": str(e) or type(e).__name__}
            try:
                codes = admin.delete_topic(topic)
                if any(codes):
                    cleanup.append(f"removing {topic} via {admin.where}: {', '.join(map(_error_name, codes))}")
            except (OSError, ValueError, struct.error) as e:
                cleanup.append(f"removing {topic} via {admin.where}: {e}")
        except (OSError, ValueError, KeyError, struct.error) as e:
            for h, p, _ in group:
                results.setdefault(f"{h}:{p}", {"error": str(e) or type(e).__name__})
        finally:
            for c in conns.values():
                c.close()
    return {"topic": topic, "brokers": results, "cleanup": "; ".join(cleanup), "swept": swept}


def _connect_to(conns, addresses, broker_id, fallback):
    """The connection to broker_id (opened at the address its metadata gives, when not open yet)."""
    if broker_id in conns:
        return conns[broker_id]
    if broker_id in addresses:
        conns[broker_id] = _Kafka(*addresses[broker_id])
        return conns[broker_id]
    return fallback


def main(argv):
    plan = json.loads(argv[1])
    out: dict = {"hostname": socket.gethostname(), "dns": {}, "tcp": {}, "zookeeper": {}, "kafka": {}}
    jobs: list = [("dns", name, dns_a, (name,)) for name in plan.get("dns", [])]
    out["quorum"] = {}
    for kind, fn in (("tcp", tcp), ("zookeeper", zookeeper), ("kafka", kafka), ("quorum", quorum)):
        jobs += [(kind, f"{host}:{port}", fn, (host, port)) for host, port in plan.get(kind, [])]
    # concurrently: a name that does not resolve costs its timeout once, not once per name
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [(kind, key, pool.submit(fn, *args)) for kind, key, fn, args in jobs]
        for kind, key, future in futures:
            out[kind][key] = future.result()
    if plan.get("produce"):
        out["produce"] = produce_check(plan["produce"])
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
