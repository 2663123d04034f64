"""Parley from Python with the generated stubs in gen/python.

Signs up (or logs in), finds or creates a public room and joins it, opens the
Connect stream, subscribes, sends one message and prints what arrives until
that message is both acknowledged (durable) and delivered back on the stream.

    python examples/python/parley_example.py --addr 127.0.0.1:8080 --user ann --room lobby

The stubs are imported from gen/python (set PARLEY_PYTHON_STUBS to use
another copy); they need grpcio and protobuf (requirements.txt).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import queue
import secrets
import sys
import threading
from dataclasses import dataclass, field

STUBS = os.environ.get("PARLEY_PYTHON_STUBS") or str(
    pathlib.Path(__file__).resolve().parents[2] / "gen" / "python"
)
if STUBS not in sys.path:
    sys.path.insert(0, STUBS)

import grpc  # noqa: E402

from parley.v1 import auth_pb2, auth_pb2_grpc  # noqa: E402
from parley.v1 import chat_pb2, chat_pb2_grpc  # noqa: E402
from parley.v1 import rooms_pb2, rooms_pb2_grpc  # noqa: E402


@dataclass
class Session:
    """A logged-in user with clients on one channel."""

    channel: grpc.Channel
    user: auth_pb2.User
    tokens: auth_pb2.TokenPair
    auth: auth_pb2_grpc.AuthServiceStub = field(init=False)
    rooms: rooms_pb2_grpc.RoomServiceStub = field(init=False)
    chat: chat_pb2_grpc.ChatServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channel)
        self.rooms = rooms_pb2_grpc.RoomServiceStub(self.channel)
        self.chat = chat_pb2_grpc.ChatServiceStub(self.channel)

    @property
    def metadata(self) -> list[tuple[str, str]]:
        """Call metadata carrying the access token."""
        return [("authorization", "Bearer " + self.tokens.access_token)]


def sign_up_or_login(channel: grpc.Channel, username: str, password: str) -> Session:
    """Signs username up; logs in instead when the name is taken."""
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    try:
        resp = auth.SignUp(auth_pb2.SignUpRequest(username=username, password=password))
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
        resp = auth.Login(auth_pb2.LoginRequest(username=username, password=password))
    return Session(channel, resp.user, resp.tokens)


def find_or_create_room(s: Session, name: str) -> rooms_pb2.Room:
    """Returns the public room called name, creating it if needed, and joins it."""
    req = rooms_pb2.ListRoomsRequest(filter=rooms_pb2.ROOM_FILTER_PUBLIC, page_size=100)
    room = None
    while room is None:
        resp = s.rooms.ListRooms(req, metadata=s.metadata)
        room = next((r for r in resp.rooms if r.name == name), None)
        if not resp.next_page_token:
            break
        req.page_token = resp.next_page_token
    if room is None:
        room = s.rooms.CreateRoom(
            rooms_pb2.CreateRoomRequest(name=name, visibility=rooms_pb2.ROOM_VISIBILITY_PUBLIC),
            metadata=s.metadata,
        ).room
    s.rooms.JoinRoom(rooms_pb2.JoinRoomRequest(room_id=room.room_id), metadata=s.metadata)
    return room


class Connection:
    """One Connect stream: send frames with send(), read them by iterating."""

    _CLOSE = object()

    def __init__(self, s: Session, timeout: float | None = None) -> None:
        self._out: queue.Queue = queue.Queue()
        self._call = s.chat.Connect(self._frames(), metadata=s.metadata, timeout=timeout)

    def _frames(self):
        while (frame := self._out.get()) is not self._CLOSE:
            yield frame

    def send(self, **frame) -> None:
        """Queues one ConnectRequest, e.g. send(ping=chat_pb2.Ping(nonce=1))."""
        self._out.put(chat_pb2.ConnectRequest(**frame))

    def __iter__(self):
        return iter(self._call)

    def close(self) -> None:
        """Half-closes the stream and cancels it."""
        self._out.put(self._CLOSE)
        self._call.cancel()


def send_and_receive(s: Session, room_id: str, body: str, timeout: float = 30.0, log=print):
    """Subscribes to room_id on a new stream, sends body, and returns
    (ack message, delivered message) once the message is both acknowledged and
    delivered back. Every frame is passed to log first."""
    client_msg_id = "py-example-" + secrets.token_hex(8)
    conn = Connection(s, timeout=timeout)
    conn.send(subscribe=chat_pb2.Subscribe(room_id=room_id))
    acked = delivered = None
    try:
        for resp in conn:
            kind = resp.WhichOneof("frame")
            if kind == "subscribed":
                log(f"subscribed at seq {resp.subscribed.head.seq}")
                conn.send(send=chat_pb2.SendMessageRequest(room_id=room_id, client_msg_id=client_msg_id, body=body))
            elif kind == "send_ack":
                if resp.send_ack.HasField("error"):
                    raise RuntimeError(f"send refused: {resp.send_ack.error.message}")
                acked = resp.send_ack.message
                log(f"ack seq {acked.seq}")
            elif kind == "message":
                m = resp.message
                log(f"message #{m.seq} {m.sender_username}: {m.body}")
                if m.client_msg_id == client_msg_id:
                    delivered = m
            elif kind == "subscribe_error":
                raise RuntimeError(f"subscribe: {resp.subscribe_error.error.message}")
            if acked is not None and delivered is not None:
                return acked, delivered
    finally:
        conn.close()
    raise RuntimeError("stream ended before the message came back")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", default=os.environ.get("PARLEY_ADDR", "127.0.0.1:8080"))
    p.add_argument("--user", default="py_" + secrets.token_hex(4))
    p.add_argument("--password", default=os.environ.get("PARLEY_PASSWORD", "correct-horse-battery"))
    p.add_argument("--room", default="lobby")
    p.add_argument("--text", default="hello from the Python example")
    a = p.parse_args(argv)
    with grpc.insecure_channel(a.addr) as channel:
        s = sign_up_or_login(channel, a.user, a.password)
        print(f"logged in {s.user.username} ({s.user.user_id})")
        room = find_or_create_room(s, a.room)
        print(f"joined room {room.name} ({room.room_id})")
        send_and_receive(s, room.room_id, a.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
