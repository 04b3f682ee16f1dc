"""A consumer of Chronicle's event stream in Python (nats-py), with its own checkpoint.

A durable JetStream pull consumer reads the stream in the log's order, skips every event
whose cursor is not after the checkpoint (delivery is at least once; cursors sort as
strings in log order), handles the rest, saves the checkpoint, then acknowledges. An idle
stream is normal: `fetch` raising a timeout just means nothing is waiting, and the loop
goes on until SIGINT/SIGTERM, or until nothing has arrived for --idle-exit seconds.

    pip install -r tests/docs/requirements.txt
    python3 examples/consumer.py --durable my-analytics --checkpoint my-analytics.cursor
    python3 examples/consumer.py --idle-exit 5 --json    # count what is there, then stop

NATS_URL, CHRONICLE_STREAM and CHRONICLE_SUBJECT_PREFIX are read as Chronicle reads them.
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter

import nats

START = "0000000000000000-0000000000000000"  # before every cursor


def load_checkpoint(path):
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or START
    return START


def save_checkpoint(path, cursor):
    if path:
        # a whole file or the old one: never half a cursor
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(cursor)
        os.replace(path + ".tmp", path)


async def consume(args):
    counts = Counter()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    nc = await nats.connect(args.nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(args.subject, durable=args.durable, stream=args.stream)
        checkpoint = load_checkpoint(args.checkpoint)
        last_message = time.monotonic()
        while not stop.is_set():
            try:
                messages = await sub.fetch(100, timeout=1)
            except asyncio.TimeoutError:
                # nothing waiting: the stream is idle, which is not an error. nats-py raises
                # nats.errors.TimeoutError (a subclass) or, on some paths, asyncio's own.
                if args.idle_exit is not None and time.monotonic() - last_message >= args.idle_exit:
                    break
                continue
            last_message = time.monotonic()
            for msg in messages:
                event = json.loads(msg.data)
                if event["cursor"] > checkpoint:  # the strings sort in log order
                    counts[event["event_type"]] += 1  # your handling goes here
                    checkpoint = event["cursor"]
                    save_checkpoint(args.checkpoint, checkpoint)
                await msg.ack()  # after the effect (and the checkpoint) is stored
    finally:
        await nc.close()
    return counts, checkpoint


def main():
    prefix = os.environ.get("CHRONICLE_SUBJECT_PREFIX", "chronicle")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--stream", default=os.environ.get("CHRONICLE_STREAM", "CHRONICLE_EVENTS"))
    p.add_argument("--subject", default=f"{prefix}.events.>", help="default <prefix>.events.>")
    p.add_argument("--durable", default="python-consumer", help="the consumer's name on the server")
    p.add_argument("--checkpoint", help="a file keeping the last cursor handled")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS",
                   help="stop when nothing has arrived for this long (default: run until a signal)")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = p.parse_args()
    counts, checkpoint = asyncio.run(consume(args))
    if args.json:
        print(json.dumps({"total": sum(counts.values()), "by_type": counts, "last_cursor": checkpoint}))
    else:
        for event_type, n in sorted(counts.items()):
            print(f"{n:>10}  {event_type}")
        print(f"{sum(counts.values()):>10}  events in all; last cursor {checkpoint}")


if __name__ == "__main__":
    sys.exit(main())
