"""Codecs of the CAS endpoint, keyed by media type.

A body is read by the codec its Content-Type names, else by the first
codec whose ``sniff`` recognises it, else as Mathematica text (clients in
the URLFetch style send a form content type whatever the body holds).
"""

from __future__ import annotations

from .base import CasCodec
from .json_list import JsonListCodec
from .mathematica import MathematicaCodec
from .wxf import WxfCodec

TEXT = MathematicaCodec()

CAS_CODECS: dict[str, CasCodec] = {
    codec.media_type: codec for codec in (WxfCodec(), JsonListCodec(), TEXT)
}

MEDIA_TYPE_ALIASES = {
    "text/plain": TEXT.media_type,
    "application/vnd.wolfram.mathematica": TEXT.media_type,
}


def codec_for_body(content_type: str, body: bytes) -> CasCodec:
    """The codec that reads this body."""
    media_type = _media_type(content_type)
    if media_type in CAS_CODECS:
        return CAS_CODECS[media_type]
    for codec in CAS_CODECS.values():
        if codec.sniff(body):
            return codec
    return TEXT


def codec_for_reply(accept: str, request_codec: CasCodec) -> CasCodec:
    """The codec the reply is written in: what Accept names, else the request's."""
    for item in accept.split(","):
        media_type = _media_type(item)
        if media_type in CAS_CODECS:
            return CAS_CODECS[media_type]
    return request_codec


def _media_type(header: str) -> str:
    media_type = header.split(";", 1)[0].strip().lower()
    return MEDIA_TYPE_ALIASES.get(media_type, media_type)


__all__ = ["CAS_CODECS", "CasCodec", "codec_for_body", "codec_for_reply"]
