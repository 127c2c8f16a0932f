#!/usr/bin/env python3
"""DERIVED benchmark input for pm-rebuild: raw websocket frame lines (pmarchive.raw/1, as pm-stream
writes them) for one synthetic BTC up/down market whose two books keep 60-100 levels a side.

    scripts/gen_ws_bench.py FRAMES [SEED] [MIN_LEVELS MAX_LEVELS] > raw.jsonl

Each book keeps between MIN_LEVELS and MAX_LEVELS price levels in total (both sides; default 60
and 100, the size of the real captures' books: 46 and 99 levels).

Not a capture and not live data: the shapes follow the real captures (facts §6.2,
../shared/fixtures/polymarket/ws_market_price_change_crossing_burst_full.json): an initial dump as a
JSON array of `book` events, `price_change` messages with one entry per asset (the Down book mirrors
the Up book), every hash computed with the venue's routine (facts §6.3), `last_trade_price` events
each followed by a `book` refresh without `tick_size`/`last_trade_price`, and same-timestamp bursts
(two messages, both carrying the hash of the state after the second). Deterministic for a seed.
"""
import hashlib
import time
import json
import random
import sys

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 7)
LO = int(sys.argv[3]) // 2 if len(sys.argv) > 3 else 30
HI = int(sys.argv[4]) // 2 if len(sys.argv) > 4 else 50
MARKET = "0x" + "5e" * 32
UP = "7" + "1234567890" * 7 + "1"
DOWN = "5" + "0987654321" * 7 + "2"
T0 = 1790658661234


def px(k):
    """Price text for k thousandths, as the venue spells it (no trailing zeros)."""
    s = ("%.3f" % (k / 1000)).rstrip("0")
    return s


def size():
    return str(rng.randint(5, 50000)) if rng.random() < 0.4 else "%.2f" % (rng.randint(500, 5000000) / 100)


class Book:
    def __init__(self, asset, bids, asks):
        self.asset, self.bids, self.asks = asset, bids, asks  # dict k -> size text
        self.ltp = "0.5"

    def wire(self, side):
        d = self.bids if side == "bids" else self.asks
        ks = sorted(d) if side == "bids" else sorted(d, reverse=True)
        return [{"price": px(k), "size": d[k]} for k in ks]

    def hash(self, ts):
        b = {"market": MARKET, "asset_id": self.asset, "timestamp": ts, "hash": "", "bids": self.wire("bids"),
             "asks": self.wire("asks"), "min_order_size": "5", "tick_size": "0.001", "neg_risk": False,
             "last_trade_price": self.ltp}
        return hashlib.sha1(json.dumps(b, separators=(",", ":")).encode()).hexdigest()

    def best(self):
        return (px(max(self.bids)) if self.bids else "", px(min(self.asks)) if self.asks else "")


up_b = {k: size() for k in rng.sample(range(10, 490), (LO + HI) // 2)}
up_a = {k: size() for k in rng.sample(range(510, 990), (LO + HI) // 2)}
up = Book(UP, up_b, up_a)
down = Book(DOWN, {1000 - k: s for k, s in up_a.items()}, {1000 - k: s for k, s in up_b.items()})

seq = 0
ts = T0
out = sys.stdout


def emit(body):
    global seq
    recv = ts + 31
    sec, ms = divmod(recv, 1000)

    t = time.gmtime(sec)
    at = "%04d-%02d-%02dT%02d:%02d:%02d.%03d%03dZ" % (t[:6] + (ms, seq % 1000))
    env = {"schema": "pmarchive.raw/1", "venue": "polymarket", "tool": "bench", "collector_version": "derived",
           "run_id": "bench-derived", "host": "bench", "seq": seq, "kind": "ws", "collected_at_utc": at,
           "body_kind": "json", "body": body, "ctx": {"event": "frame", "conn_id": 0, "frame_no": seq}}
    out.write(json.dumps(env, separators=(",", ":")))
    out.write("\n")
    seq += 1


def book_event(b, full):
    e = {"market": MARKET, "asset_id": b.asset, "timestamp": str(ts), "hash": b.hash(str(ts)),
         "bids": b.wire("bids"), "asks": b.wire("asks")}
    if full:
        e["tick_size"] = "0.001"
    e["event_type"] = "book"
    if full:
        e["last_trade_price"] = b.ltp
    return e


def change():
    """One random level change on the Up book and its mirror on the Down book: (entries, ...)."""
    side = rng.choice(("bids", "asks"))
    d = up.bids if side == "bids" else up.asks
    lo, hi = (10, 490) if side == "bids" else (510, 990)
    if len(d) > LO and (len(d) >= HI or rng.random() < 0.3):
        k, s = rng.choice(list(d)), "0"
    else:
        k, s = rng.randint(lo, hi), size()
    md = down.asks if side == "bids" else down.bids
    for book_side, key in ((d, k), (md, 1000 - k)):
        if s == "0":
            book_side.pop(key, None)
        else:
            book_side[key] = s
    return [(up, "BUY" if side == "bids" else "SELL", k, s), (down, "SELL" if side == "bids" else "BUY", 1000 - k, s)]


def price_change(entries):
    pcs = []
    for b, sd, k, s in entries:
        bb, ba = b.best()
        pcs.append({"asset_id": b.asset, "price": px(k), "size": s, "side": sd, "hash": b.hash(str(ts)),
                    "best_bid": bb, "best_ask": ba})
    return {"market": MARKET, "price_changes": pcs, "timestamp": str(ts), "event_type": "price_change"}


emit([book_event(up, True), book_event(down, True)])
while seq < N:
    ts += rng.randint(1, 40)
    r = rng.random()
    if r < 0.03:
        # A trade on the Up token, then the venue's book refresh without tick_size/last_trade_price.
        p = px(min(up.asks)) if up.asks else "0.5"
        up.ltp = p
        emit({"market": MARKET, "asset_id": UP, "price": p, "size": "10", "fee_rate_bps": "0", "side": "BUY",
              "timestamp": str(ts), "event_type": "last_trade_price", "transaction_hash": "0x%064x" % seq})
        emit(book_event(up, False))
    elif r < 0.06:
        # A same-timestamp burst: both messages carry the hash of the state after the second.
        first = change()
        second = change()
        msg2 = price_change(second)
        h = {e["asset_id"]: e["hash"] for e in msg2["price_changes"]}
        msg1 = {"market": MARKET, "price_changes": [
            {"asset_id": b.asset, "price": px(k), "size": s, "side": sd, "hash": h[b.asset], "best_bid": b.best()[0],
             "best_ask": b.best()[1]} for b, sd, k, s in first], "timestamp": str(ts), "event_type": "price_change"}
        emit(msg1)
        emit(msg2)
    else:
        emit(price_change(change()))
