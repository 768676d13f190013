"""The few pieces of protobuf's wire format tessera reads and writes: a SentencePiece model's
fields (bounded_encoding.py reads its TrainerSpec, tokenizer_save.py its pieces) and the model
sentencepiece_json.py builds. No protobuf package: a handful of field numbers, fixed by
sentencepiece_model.proto."""
from __future__ import annotations

import struct
from typing import Any, Dict, Iterator, List, Tuple

_FLOAT = struct.Struct("<f")


def read_varint(data: bytes, at: int) -> Tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            return value, at


def records(data: bytes) -> Iterator[Tuple[int, int, Any]]:
    """(field number, wire type, value) of one message in order: an int for varints, bytes for
    length-delimited records and fixed 32/64-bit ones."""
    at = 0
    while at < len(data):
        key, at = read_varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = read_varint(data, at)
        elif wire == 2:
            size, at = read_varint(data, at)
            value, at = data[at:at + size], at + size
            if len(value) != size:
                raise ValueError("truncated record")
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, at = data[at:at + size], at + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def fields(data: bytes, keep: Tuple[int, ...]) -> Dict[int, object]:
    """The fields `keep` of one message as protobuf merges them: a varint's last value, an
    embedded message's records joined (the others, a model's thousands of pieces, skipped)."""
    out: Dict[int, object] = {}
    parts: Dict[int, List[bytes]] = {}
    for number, wire, value in records(data):
        if number not in keep or wire in (1, 5):
            continue
        if (wire == 0 and number in parts) or (wire == 2 and number in out):
            raise ValueError(f"field {number} with two wire types")
        if wire == 0:
            out[number] = value
        else:
            parts.setdefault(number, []).append(value)
    out.update({number: b"".join(chunks) for number, chunks in parts.items()})
    return out


def int32(value: int) -> int:
    """An int32 field's value from its varint (protobuf writes -1 as 2**64 - 1)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def read_float(value: bytes) -> float:
    return _FLOAT.unpack(value)[0]


def field(number: int, value: Any) -> bytes:
    """One record: str and bytes length-delimited, an int a varint (a negative int32 as protobuf
    writes it), a float fixed 32-bit."""
    if isinstance(value, float):
        return varint(number << 3 | 5) + _FLOAT.pack(value)
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value & (1 << 64) - 1)


def varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
