"""A tiny webhook receiver: verifies reelflow's Standard Webhooks signature and prints each event.

It needs only the standard library and the `standardwebhooks` package, as your own receiver would.

    # the tenant's secret (`reelflow keys create --tenant default` prints it as webhook_secret)
    export REELFLOW_WEBHOOK_SECRET=whsec_...
    python examples/webhook_receiver.py --port 9000

    # in another shell: a worker allowed to call 127.0.0.1, then a plan that reports to the receiver
    REELFLOW_ALLOW_PRIVATE_URLS=1 reelflow worker
    reelflow run examples/sunset.yaml --webhook http://127.0.0.1:9000/hook

Answers 204 to a good webhook, 401 to a bad signature. reelflow retries anything but a 2xx with the same
`webhook-id`, so a receiver should do its work once per id; this one remembers the ids it has seen.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def make_handler(webhook: Webhook) -> type[BaseHTTPRequestHandler]:
    seen: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                event = webhook.verify(body, dict(self.headers.items()))
            except (WebhookVerificationError, ValueError) as exc:
                print(f"refused a webhook: {exc}", file=sys.stderr)
                self.send_response(401)
                self.end_headers()
                return
            msg_id = self.headers["webhook-id"]
            if msg_id not in seen:  # a retry of an event already handled is acknowledged, not redone
                seen.add(msg_id)
                show(event, msg_id)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def show(event: dict, msg_id: str) -> None:
    data = event.get("data", {})
    line = f"{event.get('timestamp')}  {event.get('type'):<22} execution {data.get('id')}  status {data.get('status')}"
    if (job := (data.get("event") or {}).get("job")) is not None:
        line += f"  job {job}"
    if data.get("error"):
        line += f"  error: {data['error']}"
    elif (data.get("result") or {}).get("url"):
        line += f"  result: {data['result']['url']}"
    print(f"{line}  ({msg_id})", flush=True)
    if os.environ.get("VERBOSE"):
        print(json.dumps(event, indent=2), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument(
        "--secret",
        default=os.environ.get("REELFLOW_WEBHOOK_SECRET"),
        help="the tenant's whsec_… secret (default: $REELFLOW_WEBHOOK_SECRET)",
    )
    args = parser.parse_args()
    if not args.secret:
        parser.error("give the tenant's webhook secret with --secret or REELFLOW_WEBHOOK_SECRET")
    server = ThreadingHTTPServer((args.host, args.port), make_handler(Webhook(args.secret)))
    print(f"listening on http://{args.host}:{args.port}/ (any path); Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
