from parley.v1 import chat_pb2 as _chat_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoomEvent(_message.Message):
    __slots__ = ("message", "message_withdrawn", "typing", "presence", "read_marker")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    TYPING_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    READ_MARKER_FIELD_NUMBER: _ClassVar[int]
    message: _chat_pb2.Message
    message_withdrawn: _chat_pb2.MessageWithdrawn
    typing: _chat_pb2.TypingEvent
    presence: _chat_pb2.PresenceEvent
    read_marker: _chat_pb2.ReadMarker
    def __init__(self, message: _Optional[_Union[_chat_pb2.Message, _Mapping]] = ..., message_withdrawn: _Optional[_Union[_chat_pb2.MessageWithdrawn, _Mapping]] = ..., typing: _Optional[_Union[_chat_pb2.TypingEvent, _Mapping]] = ..., presence: _Optional[_Union[_chat_pb2.PresenceEvent, _Mapping]] = ..., read_marker: _Optional[_Union[_chat_pb2.ReadMarker, _Mapping]] = ...) -> None: ...

class MessageRecord(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: _chat_pb2.Message
    def __init__(self, message: _Optional[_Union[_chat_pb2.Message, _Mapping]] = ...) -> None: ...
