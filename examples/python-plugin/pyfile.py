#!/usr/bin/env python3
"""An executable alerter plugin: no .so, no build, just the plugin protocol.

alerter runs every executable in its plugin directories and talks to it in
JSON lines on stdin/stdout (docs/plugins.md). This one is the `pyfile`
source: it watches that a file exists and warns when it is gone, then
resolves when it is back.

    sources:
      flag:
        type: pyfile
        path: /var/run/backup.ok
        interval: 60
"""
import json
import os
import sys
import threading

NAME = "pyfile"
stop = threading.Event()
out_lock = threading.Lock()


def send(msg):
    with out_lock:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()


def check_config(cfg):
    errors = []
    if not isinstance(cfg.get("path"), str):
        errors.append({"path": "path", "message": "required: the file to watch"})
    if not isinstance(cfg.get("interval", 60), (int, float)) or cfg.get("interval", 60) <= 0:
        errors.append({"path": "interval", "message": "seconds between checks, more than 0"})
    unknown = set(cfg) - {"path", "interval"}
    errors += [{"path": k, "message": "unknown key"} for k in sorted(unknown)]
    return errors


def watch(cfg):
    path, interval = cfg["path"], cfg.get("interval", 60)
    present = None
    while not stop.is_set():
        now = os.path.exists(path)
        if now != present:
            present = now
            severity = "resolved" if now else "warning"
            summary = f"{path} is there" if now else f"{path} is missing"
            send({"op": "event", "event": {"v": 1, "severity": severity, "summary": summary,
                                           "key": path, "labels": {"path": path}}})
        stop.wait(interval)


def main():
    worker = None
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.get("op")
        if op == "hello":
            send({"op": "hello", "protocol": 1,
                  "plugin": {"name": NAME, "version": "1.0", "description": "warns while a file is missing"}})
        elif op == "validate":
            send({"op": "validated", "errors": check_config(msg.get("config", {}))})
        elif op == "start":
            errors = check_config(msg.get("config", {}))
            if errors:
                send({"op": "failed", "error": errors[0]["message"]})
                return 1
            send({"op": "started"})
            worker = threading.Thread(target=watch, args=(msg["config"],))
            worker.start()
        elif op == "shutdown":
            break
    stop.set()
    if worker:
        worker.join()
    send({"op": "stopped", "status": "ok"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
