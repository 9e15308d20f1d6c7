"""The checks ``swarmctl verify`` runs inside a probe container on an overlay network.

Sent as ``python3 -c <this file> <plan JSON>``; prints one JSON object. Standard library only and
Python 3.6+, so any image with python3 can be the probe. Plan::

    {"dns": ["web", "tasks.web"], "tcp": [["10.0.1.2", 80]],
     "zookeeper": [["zookeeper-1", 2181]], "kafka": [["kafka-1", 9092]]}

DNS goes straight to Docker's embedded server (127.0.0.11) so that "no such name" and "no
answer" are told apart.
"""

import json
import random
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
        out = {"api_versions": {"error_code": error, "apis": apis}}
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


def main(argv):
    plan = json.loads(argv[1])
    out: dict = {"hostname": socket.gethostname(), "dns": {}, "tcp": {}, "zookeeper": {}, "kafka": {}}
    jobs: list = [("dns", name, dns_a, (name,)) for name in plan.get("dns", [])]
    for kind, fn in (("tcp", tcp), ("zookeeper", zookeeper), ("kafka", kafka)):
        jobs += [(kind, f"{host}:{port}", fn, (host, port)) for host, port in plan.get(kind, [])]
    # concurrently: a name that does not resolve costs its timeout once, not once per name
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [(kind, key, pool.submit(fn, *args)) for kind, key, fn, args in jobs]
        for kind, key, future in futures:
            out[kind][key] = future.result()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
