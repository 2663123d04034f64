import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Message(_message.Message):
    __slots__ = ("message_id", "room_id", "epoch", "seq", "sender_id", "sender_username", "client_msg_id", "body", "create_time")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_USERNAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    room_id: str
    epoch: str
    seq: int
    sender_id: str
    sender_username: str
    client_msg_id: str
    body: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, message_id: _Optional[str] = ..., room_id: _Optional[str] = ..., epoch: _Optional[str] = ..., seq: _Optional[int] = ..., sender_id: _Optional[str] = ..., sender_username: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., body: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RoomPosition(_message.Message):
    __slots__ = ("epoch", "seq")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    seq: int
    def __init__(self, epoch: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ("subscribe", "unsubscribe", "send", "ping", "typing", "mark_read", "options")
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    SEND_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    TYPING_FIELD_NUMBER: _ClassVar[int]
    MARK_READ_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    subscribe: Subscribe
    unsubscribe: Unsubscribe
    send: SendMessageRequest
    ping: Ping
    typing: Typing
    mark_read: MarkReadRequest
    options: StreamOptions
    def __init__(self, subscribe: _Optional[_Union[Subscribe, _Mapping]] = ..., unsubscribe: _Optional[_Union[Unsubscribe, _Mapping]] = ..., send: _Optional[_Union[SendMessageRequest, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., typing: _Optional[_Union[Typing, _Mapping]] = ..., mark_read: _Optional[_Union[MarkReadRequest, _Mapping]] = ..., options: _Optional[_Union[StreamOptions, _Mapping]] = ...) -> None: ...

class StreamOptions(_message.Message):
    __slots__ = ("message_batches",)
    MESSAGE_BATCHES_FIELD_NUMBER: _ClassVar[int]
    message_batches: bool
    def __init__(self, message_batches: _Optional[bool] = ...) -> None: ...

class Typing(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("room_id", "resume_from")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    resume_from: RoomPosition
    def __init__(self, room_id: _Optional[str] = ..., resume_from: _Optional[_Union[RoomPosition, _Mapping]] = ...) -> None: ...

class Unsubscribe(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    def __init__(self, nonce: _Optional[int] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ("message", "send_ack", "subscribed", "resync_required", "message_withdrawn", "pong", "subscribe_error", "typing", "presence", "read_marker", "message_batch")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SEND_ACK_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    RESYNC_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_ERROR_FIELD_NUMBER: _ClassVar[int]
    TYPING_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    READ_MARKER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_BATCH_FIELD_NUMBER: _ClassVar[int]
    message: Message
    send_ack: SendAck
    subscribed: Subscribed
    resync_required: ResyncRequired
    message_withdrawn: MessageWithdrawn
    pong: Pong
    subscribe_error: SubscribeError
    typing: TypingEvent
    presence: PresenceEvent
    read_marker: ReadMarker
    message_batch: MessageBatch
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., send_ack: _Optional[_Union[SendAck, _Mapping]] = ..., subscribed: _Optional[_Union[Subscribed, _Mapping]] = ..., resync_required: _Optional[_Union[ResyncRequired, _Mapping]] = ..., message_withdrawn: _Optional[_Union[MessageWithdrawn, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., subscribe_error: _Optional[_Union[SubscribeError, _Mapping]] = ..., typing: _Optional[_Union[TypingEvent, _Mapping]] = ..., presence: _Optional[_Union[PresenceEvent, _Mapping]] = ..., read_marker: _Optional[_Union[ReadMarker, _Mapping]] = ..., message_batch: _Optional[_Union[MessageBatch, _Mapping]] = ...) -> None: ...

class MessageBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ...) -> None: ...

class TypingEvent(_message.Message):
    __slots__ = ("room_id", "user_id", "username", "expire_time")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    user_id: str
    username: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, room_id: _Optional[str] = ..., user_id: _Optional[str] = ..., username: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PresenceEvent(_message.Message):
    __slots__ = ("room_id", "user_id", "username", "online")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    user_id: str
    username: str
    online: bool
    def __init__(self, room_id: _Optional[str] = ..., user_id: _Optional[str] = ..., username: _Optional[str] = ..., online: _Optional[bool] = ...) -> None: ...

class ReadMarker(_message.Message):
    __slots__ = ("room_id", "user_id", "position")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    user_id: str
    position: RoomPosition
    def __init__(self, room_id: _Optional[str] = ..., user_id: _Optional[str] = ..., position: _Optional[_Union[RoomPosition, _Mapping]] = ...) -> None: ...

class SendAck(_message.Message):
    __slots__ = ("client_msg_id", "message", "error")
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    client_msg_id: str
    message: Message
    error: Status
    def __init__(self, client_msg_id: _Optional[str] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., error: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...

class Subscribed(_message.Message):
    __slots__ = ("room_id", "head")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    head: RoomPosition
    def __init__(self, room_id: _Optional[str] = ..., head: _Optional[_Union[RoomPosition, _Mapping]] = ...) -> None: ...

class SubscribeError(_message.Message):
    __slots__ = ("room_id", "error")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    error: Status
    def __init__(self, room_id: _Optional[str] = ..., error: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...

class ResyncRequired(_message.Message):
    __slots__ = ("room_id", "head", "reason")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    head: RoomPosition
    reason: str
    def __init__(self, room_id: _Optional[str] = ..., head: _Optional[_Union[RoomPosition, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class MessageWithdrawn(_message.Message):
    __slots__ = ("room_id", "epoch", "seq", "message_id")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    epoch: str
    seq: int
    message_id: str
    def __init__(self, room_id: _Optional[str] = ..., epoch: _Optional[str] = ..., seq: _Optional[int] = ..., message_id: _Optional[str] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    def __init__(self, nonce: _Optional[int] = ...) -> None: ...

class SendMessageRequest(_message.Message):
    __slots__ = ("room_id", "client_msg_id", "body")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    client_msg_id: str
    body: str
    def __init__(self, room_id: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., body: _Optional[str] = ...) -> None: ...

class SendMessageResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: Message
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class ListMessagesRequest(_message.Message):
    __slots__ = ("room_id", "page_size", "page_token", "after_seq")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    page_size: int
    page_token: str
    after_seq: int
    def __init__(self, room_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class ListMessagesResponse(_message.Message):
    __slots__ = ("messages", "next_page_token")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    next_page_token: str
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StreamRoomRequest(_message.Message):
    __slots__ = ("room_id", "resume_from")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    resume_from: RoomPosition
    def __init__(self, room_id: _Optional[str] = ..., resume_from: _Optional[_Union[RoomPosition, _Mapping]] = ...) -> None: ...

class MarkReadRequest(_message.Message):
    __slots__ = ("room_id", "position")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    position: RoomPosition
    def __init__(self, room_id: _Optional[str] = ..., position: _Optional[_Union[RoomPosition, _Mapping]] = ...) -> None: ...

class MarkReadResponse(_message.Message):
    __slots__ = ("read_marker",)
    READ_MARKER_FIELD_NUMBER: _ClassVar[int]
    read_marker: ReadMarker
    def __init__(self, read_marker: _Optional[_Union[ReadMarker, _Mapping]] = ...) -> None: ...

class ListRoomStatesRequest(_message.Message):
    __slots__ = ("room_ids",)
    ROOM_IDS_FIELD_NUMBER: _ClassVar[int]
    room_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, room_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RoomState(_message.Message):
    __slots__ = ("room_id", "head", "last_read", "unread_count", "last_message")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    LAST_READ_FIELD_NUMBER: _ClassVar[int]
    UNREAD_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    head: RoomPosition
    last_read: RoomPosition
    unread_count: int
    last_message: Message
    def __init__(self, room_id: _Optional[str] = ..., head: _Optional[_Union[RoomPosition, _Mapping]] = ..., last_read: _Optional[_Union[RoomPosition, _Mapping]] = ..., unread_count: _Optional[int] = ..., last_message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class ListRoomStatesResponse(_message.Message):
    __slots__ = ("states",)
    STATES_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedCompositeFieldContainer[RoomState]
    def __init__(self, states: _Optional[_Iterable[_Union[RoomState, _Mapping]]] = ...) -> None: ...

class StreamRoomResponse(_message.Message):
    __slots__ = ("message", "resync_required", "message_withdrawn")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESYNC_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    message: Message
    resync_required: ResyncRequired
    message_withdrawn: MessageWithdrawn
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., resync_required: _Optional[_Union[ResyncRequired, _Mapping]] = ..., message_withdrawn: _Optional[_Union[MessageWithdrawn, _Mapping]] = ...) -> None: ...
