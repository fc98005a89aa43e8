"""The free-text fields of a protobuf message, bounded (the message side of
:func:`primia.limits.check_text`, kept here because only the gRPC layer reads protobuf)."""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from primia.limits import check_text


def check_strings(message: Message, limit: int, *, path: str = "") -> None:
    """Raise :class:`LimitExceeded` naming the first string field of ``message`` (nested
    and repeated ones too) longer than ``limit`` characters. Bytes fields are not text."""
    for field, value in message.ListFields():
        name = f"{path}{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            for text in value if _repeated(field) else (value,):
                check_text(name, text, limit)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value if _repeated(field) else (value,):
                check_strings(item, limit, path=f"{name}.")


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)
