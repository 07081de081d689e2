"""Which of a channel's clouds sent a voice agent callback, proven, and the events it holds:
Alibaba's callback token, or ZEGO's signature, whose proof is remembered with its body."""

from __future__ import annotations

from collections.abc import Mapping

from channels.callbacks import Callback, CallbackRejected, SeenProofs
from channels.voice import aliyun_callbacks, zego
from channels.voice.config import VoiceConfig
from channels.voice.events import VoiceEvent

# seconds a ZEGO callback's proof is remembered: its Timestamp may be 300 s either side of ours,
# so one proof passes the check for 600 s, and ZEGO retries for 62 s after the first attempt
PROOF_MEMORY = 900.0


def _zego_proof(payload: object) -> str | None:
    """A ZEGO callback's proof as a key: the signed fields as the signature covers them."""
    if not isinstance(payload, Mapping):
        return None
    fields = [payload.get(name) for name in ("Timestamp", "Nonce", "Signature")]
    if not all(isinstance(f, str | int) and not isinstance(f, bool) for f in fields):
        return None
    timestamp, nonce, signature = (str(f) for f in fields)
    return f"{timestamp}\n{nonce}\n{signature.lower()}"


class CloudCallbacks:
    """Checks and reads the voice callbacks of every channel; the ZEGO proofs seen, per channel."""

    def __init__(self) -> None:
        self._proofs: dict[str, SeenProofs] = {}  # ZEGO callback proofs seen, per channel

    def read(
        self, channel_id: str, voice: VoiceConfig, callback: Callback, *, now: float
    ) -> tuple[list[VoiceEvent], str]:
        """The callback's events and the cloud that sent it. CallbackRejected when no
        configured cloud's proof matches (or a ZEGO proof seen before comes with another body:
        "replayed"), CallbackMalformed for a body no cloud sends."""
        if "authorization" in callback.headers and voice.aliyun is not None:
            token = voice.aliyun.callback_token.get_secret_value()
            aliyun_callbacks.check_callback(callback, token=token, now=now)
            return aliyun_callbacks.parse_event(callback.payload), "aliyun"
        if voice.zego is not None:
            # ZEGO signs a timestamp and a nonce, not the body: a proof seen before passes only
            # with the body it came with (ZEGO's retry), whatever its age
            proofs = self._proofs.setdefault(channel_id, SeenProofs(keep=PROOF_MEMORY))
            proof = _zego_proof(callback.payload)
            if proof is None or not proofs.retried(proof, callback.body):
                zego.check_callback(callback, secret=voice.zego.callback_key(), now=now)
                if proof is not None:
                    proofs.remember(proof, callback.body)
            return [zego.parse_event(callback.payload)], "zego"
        raise CallbackRejected("signature", "no proof this channel's clouds give")
