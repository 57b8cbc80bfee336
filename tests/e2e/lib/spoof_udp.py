#!/usr/bin/env python3
"""onair e2e: junk UDP datagrams to 127.0.0.1:DPORT with a *spoofed source port* (a raw socket:
root / CAP_NET_RAW), i.e. from the 5-tuple of a live WebRTC session (fuzz_media.test.mjs).

  spoof_udp.py --probe                      exit 0 when a raw socket can be opened
  spoof_udp.py DPORT SPORT[,SPORT...] SECONDS RATE
      sends RATE datagrams/s for SECONDS, round-robin over the sources: random bytes,
      DTLS-looking records (first byte 20..63), RTP/RTCP-looking packets (0x80..0xBF, RTCP with
      bad lengths) and STUN-looking headers; prints a JSON count per kind on stdout.
      A source is a port (from 127.0.0.1) or ADDR:PORT (from that local IPv4 address: the raw
      socket is bound to it, so the kernel writes it as the IP source).
"""
import json, os, random, socket, struct, sys, time


def dtls():
    body = os.urandom(random.randint(0, 600))
    head = bytes([random.choice([20, 21, 22, 23, random.randint(20, 63)])])
    head += random.choice([b'\xfe\xfd', b'\xfe\xff', os.urandom(2)])
    head += struct.pack('>H', random.choice([0, 1, 1, 2, random.randint(0, 0xffff)])) + os.urandom(6)
    length = len(body) if random.random() < 0.7 else random.randint(0, 0xffff)
    return head + struct.pack('>H', length) + body


def rtp():
    pt = random.choice([96, 100, 111, 0x80 | 96, 0x80 | 111, random.randint(0, 255)])
    return bytes([random.randint(0x80, 0xbf), pt]) + os.urandom(random.randint(10, 1200))


def rtcp():
    out = b''
    for _ in range(random.randint(1, 4)):
        words = random.randint(1, 30)
        length = random.choice([words, 0, 0xffff, words + random.randint(1, 50), max(0, words - 1)])
        out += bytes([0x80 | random.randint(0, 31), random.randint(192, 210)]) + struct.pack('>H', length)
        out += os.urandom(words * 4)
    return out if random.random() < 0.7 else out[:random.randint(1, len(out))]


def stun():
    body = os.urandom(random.randint(0, 100))
    return struct.pack('>HHI', random.choice([1, 1, 0x101, 0x111]), random.randint(0, 0xffff), 0x2112a442) + os.urandom(12) + body


KINDS = {'random': lambda: os.urandom(random.randint(1, 1400)), 'dtls': dtls, 'rtp': rtp, 'rtcp': rtcp, 'stun': stun}


def main():
    if sys.argv[1:] == ['--probe']:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
        return 0
    dport, seconds, rate = int(sys.argv[1]), float(sys.argv[3]), int(sys.argv[4])
    sources = [(p.rsplit(':', 1)[0], int(p.rsplit(':', 1)[1])) if ':' in p else ('127.0.0.1', int(p))
               for p in sys.argv[2].split(',')]
    socks = {}
    for addr, _ in sources:
        if addr not in socks:
            socks[addr] = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)  # we write the UDP header
            socks[addr].bind((addr, 0))  # the IP source the kernel writes
    counts = {k: 0 for k in KINDS}
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        t0 = time.monotonic()
        for _ in range(max(1, rate // 100)):
            kind = random.choice(list(KINDS))
            p = KINDS[kind]()
            saddr, sport = sources[n % len(sources)]
            # UDP header with checksum 0 (none, allowed on IPv4); the kernel adds the IP header
            socks[saddr].sendto(struct.pack('>HHHH', sport, dport, 8 + len(p), 0) + p, ('127.0.0.1', 0))
            counts[kind] += 1
            n += 1
        time.sleep(max(0, 0.01 - (time.monotonic() - t0)))
    print(json.dumps(counts))
    return 0


if __name__ == '__main__':
    sys.exit(main())
