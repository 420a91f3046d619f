"""Codecs of the CAS endpoint, keyed by media type.

A body is read by the codec that recognises it (a WXF header, a JSON
array, a ``{`` list), else by the codec its Content-Type names, else as
Mathematica text: clients in the URLFetch style send a form content type
whatever the body holds.

Every codec is bounded by the server's body limit: no body decodes to more
numbers than :func:`~mlbridge.codecs.base.max_values_for` allows, and a
compressed WXF body inflates to at most the body limit.
"""

from __future__ import annotations

from .base import CasCodec, max_values_for
from .json_list import JsonListCodec
from .mathematica import MathematicaCodec
from .wxf import DEFAULT_MAX_DECOMPRESSED, WxfCodec

TEXT = MathematicaCodec()
MEDIA_TYPE_ALIASES = {
    "text/plain": TEXT.media_type,
    "application/vnd.wolfram.mathematica": TEXT.media_type,
}


def cas_codecs(max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> dict[str, CasCodec]:
    """Every CAS codec by media type, bounded by the body limit ``max_decompressed``.

    WXF inflates at most that many bytes; no codec decodes to more numbers
    than :func:`~mlbridge.codecs.base.max_values_for` it.
    """
    max_values = max_values_for(max_decompressed)
    codecs = (
        WxfCodec(max_decompressed, max_values),
        JsonListCodec(max_values),
        MathematicaCodec(max_values),
    )
    return {codec.media_type: codec for codec in codecs}


CAS_CODECS = cas_codecs()


def codec_for_body(
    content_type: str, body: bytes, codecs: dict[str, CasCodec] = CAS_CODECS
) -> CasCodec:
    """The codec that reads this body."""
    for codec in codecs.values():
        if codec.sniff(body):
            return codec
    return codecs.get(_media_type(content_type)) or codecs.get(TEXT.media_type, TEXT)


def codec_for_reply(
    accept: str, request_codec: CasCodec, codecs: dict[str, CasCodec] = CAS_CODECS
) -> CasCodec:
    """The codec the reply is written in: what Accept names, else the request's."""
    for item in accept.split(","):
        media_type = _media_type(item)
        if media_type in codecs:
            return codecs[media_type]
    return request_codec


def _media_type(header: str) -> str:
    media_type = header.split(";", 1)[0].strip().lower()
    return MEDIA_TYPE_ALIASES.get(media_type, media_type)


__all__ = [
    "CAS_CODECS",
    "CasCodec",
    "cas_codecs",
    "codec_for_body",
    "codec_for_reply",
]
