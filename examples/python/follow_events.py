"""Follows Ferrite's event stream with gql and prints every event once, in
order, as one JSON line: across dropped connections and server restarts,
with no gap and no duplicate.

    FERRITE_URL=http://127.0.0.1:8080 FERRITE_USERNAME=admin \\
    FERRITE_PASSWORD=... python follow_events.py [AFTER_ID]

How:
- Sign in over HTTP (``login``), keep the tokens, and refresh the access
  token before it expires (``refresh``); sign in again if the refresh token
  is refused.
- Each connection subscribes to ``events(after: <last id printed>)``: the
  server replays everything stored since, then goes live. When the
  connection drops (a restart, the network), wait (0.25 s doubling to 10 s)
  and connect again with a fresh token.
- ``subprotocols=[GRAPHQLWS_SUBPROTOCOL]``: the current protocol
  (graphql-transport-ws). Left out, gql offers the legacy one first and,
  as it looks for the ``Sec-WebSocket-Protocol`` response header
  case-sensitively and misses Ferrite's lower-case one, speaks the legacy
  protocol; Ferrite honours the client's first choice, so that works too.
"""

import asyncio
import json
import os
import random
import sys
import time
import urllib.request
from datetime import datetime

from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport

TOKENS = "accessToken refreshToken expiresAt"
EVENTS = gql(
    """
    subscription Follow($after: ID) {
      events(after: $after) { id deviceId service payload receivedAt }
    }
    """
)


class GraphQLError(Exception):
    """Errors Ferrite answered with; each has ``extensions.code``."""


class Session:
    """A signed-in user's tokens, kept fresh."""

    def __init__(self, origin, username, password):
        self.origin = origin.rstrip("/")
        self.username = username
        self.password = password
        self.tokens = None

    @property
    def socket_url(self):
        return self.origin.replace("http", "ws", 1) + "/graphql"

    def graphql(self, query, variables):
        request = urllib.request.Request(
            self.origin + "/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.load(response)
        if body.get("errors"):
            raise GraphQLError(body["errors"])
        return body["data"]

    def access_token(self):
        """An access token valid for at least 30 s more."""
        if self.tokens:
            expires = datetime.fromisoformat(self.tokens["expiresAt"]).timestamp()
            if expires > time.time() + 30:
                return self.tokens["accessToken"]
            try:
                self.tokens = self.graphql(
                    f"mutation($t: String!) {{ refresh(refreshToken: $t) {{ {TOKENS} }} }}",
                    {"t": self.tokens["refreshToken"]},
                )["refresh"]
                return self.tokens["accessToken"]
            except GraphQLError as error:
                # Refused (password changed, session revoked): sign in again.
                print(f"ferrite: refresh refused ({error}); signing in again", file=sys.stderr)
        self.tokens = self.graphql(
            f"mutation($u: String!, $p: String!) {{ login(username: $u, password: $p) {{ {TOKENS} }} }}",
            {"u": self.username, "p": self.password},
        )["login"]
        return self.tokens["accessToken"]


async def follow_events(session, after, on_event):
    """Calls ``on_event`` with every event after ``after``, once, forever."""
    last_id = after
    failures = 0
    while True:
        try:
            token = await asyncio.to_thread(session.access_token)
            transport = WebsocketsTransport(
                url=session.socket_url,
                init_payload={"Authorization": f"Bearer {token}"},
                subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
            )
            async with Client(transport=transport) as client:
                failures = 0
                async for result in client.subscribe(
                    EVENTS, variable_values={"after": last_id}
                ):
                    event = result["events"]
                    if last_id is not None and int(event["id"]) <= int(last_id):
                        continue
                    last_id = event["id"]
                    on_event(event)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a restart, a dropped link, a refused token
            print(f"ferrite: {type(error).__name__}: {error}", file=sys.stderr)
        failures += 1
        delay = min(10.0, 0.25 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)
        await asyncio.sleep(delay)


def main():
    session = Session(
        os.environ.get("FERRITE_URL", "http://127.0.0.1:8080"),
        os.environ.get("FERRITE_USERNAME", "admin"),
        os.environ.get("FERRITE_PASSWORD", ""),
    )
    after = sys.argv[1] if len(sys.argv) > 1 else None

    def print_event(event):
        print(json.dumps(event), flush=True)

    try:
        asyncio.run(follow_events(session, after, print_event))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
