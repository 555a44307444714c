"""The key exchange: both ends get the same fresh keys, or a HandshakeError and no keys at all."""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.secure import (
    BadSignatureError,
    HandshakeError,
    HandshakeInitiator,
    HandshakeResponder,
    NodeIdentity,
    SecureChannel,
    SecureUsageError,
    SessionKeys,
    migration_context,
)
from fabric.secure.handshake import FINISHED_BYTES, HELLO_BYTES, REPLY_BYTES

SOURCE, DESTINATION, MALLORY = (NodeIdentity.generate() for _ in range(3))
CONTEXT = migration_context(vm="web-1", epoch=7, source="us-east-1", destination="eu-west-1")


def pair(context: bytes = CONTEXT, initiator_expects: NodeIdentity = DESTINATION,
         responder_expects: NodeIdentity = SOURCE,
         responder_context: bytes | None = None) -> tuple[HandshakeInitiator, HandshakeResponder]:
    return (HandshakeInitiator(SOURCE, initiator_expects.public_bytes, context),
            HandshakeResponder(DESTINATION, responder_expects.public_bytes, responder_context or context))


def run(init: HandshakeInitiator, resp: HandshakeResponder) -> tuple[SessionKeys, SessionKeys]:
    finished, init_keys = init.finish(resp.respond(init.hello()))
    return init_keys, resp.finish(finished)


def flip(message: bytes, bit: int) -> bytes:
    out = bytearray(message)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_a_handshake_gives_both_ends_one_channel() -> None:
    init_keys, resp_keys = run(*pair())
    assert init_keys.role == "initiator" and resp_keys.role == "responder"
    assert init_keys.channel_id == resp_keys.channel_id
    source = SecureChannel(init_keys, role="initiator")
    destination = SecureChannel(resp_keys, role="responder")
    assert destination.open(source.seal(b"pages", b"meta"), b"meta") == b"pages"
    assert source.open(destination.seal(b"ack", b""), b"") == b"ack"


def test_message_sizes() -> None:
    init, resp = pair()
    hello = init.hello()
    reply = resp.respond(hello)
    finished, _ = init.finish(reply)
    assert (len(hello), len(reply), len(finished)) == (HELLO_BYTES, REPLY_BYTES, FINISHED_BYTES) == \
        (130, 130, 98)


def test_two_handshakes_never_give_the_same_keys() -> None:
    first, second = run(*pair()), run(*pair())
    assert first[0].channel_id != second[0].channel_id
    a, b = SecureChannel(first[0], role="initiator"), SecureChannel(second[0], role="initiator")
    # Same plaintext, same sequence number 0: other keys or salts give other ciphertexts.
    assert a.seal(b"\0" * 32, b"")[26:] != b.seal(b"\0" * 32, b"")[26:]


# -- wrong peers and contexts ------------------------------------------------------

def test_hello_to_an_unexpected_identity_is_refused() -> None:
    init, resp = pair(initiator_expects=MALLORY)  # the source thinks it talks to Mallory
    with pytest.raises(HandshakeError, match="addressed to another identity"):
        resp.respond(init.hello())


def test_hello_from_an_unexpected_identity_is_refused() -> None:
    init, resp = pair(responder_expects=MALLORY)
    with pytest.raises(HandshakeError, match="unexpected identity"):
        resp.respond(init.hello())


def test_an_impostor_responder_cannot_sign_for_the_destination() -> None:
    init = HandshakeInitiator(SOURCE, DESTINATION.public_bytes, CONTEXT)
    hello = init.hello()
    # Mallory answers as herself, after rewriting the addressee so her responder accepts the hello.
    readdressed = hello[:66] + MALLORY.public_bytes + hello[98:]
    reply = HandshakeResponder(MALLORY, SOURCE.public_bytes, CONTEXT).respond(readdressed)
    with pytest.raises(HandshakeError, match="responder's signature"):
        init.finish(reply)


def test_a_man_in_the_middle_swapping_ephemeral_keys_fails() -> None:
    init, resp = pair()
    hello = init.hello()
    mallory, _ = pair()  # her own ephemeral key, in a hello otherwise identical
    swapped = hello[:98] + mallory.hello()[98:]
    reply = resp.respond(swapped)
    with pytest.raises(HandshakeError, match="responder's signature"):
        init.finish(reply)


def test_another_context_is_refused() -> None:
    other = migration_context(vm="web-1", epoch=8, source="us-east-1", destination="eu-west-1")
    init, resp = pair(responder_context=other)
    with pytest.raises(HandshakeError, match="another context"):
        resp.respond(init.hello())
    # Forging the context hash in the hello only moves the failure to the signatures.
    init = HandshakeInitiator(SOURCE, DESTINATION.public_bytes, CONTEXT)
    hello = init.hello()
    other_hash = HandshakeInitiator(SOURCE, DESTINATION.public_bytes, other).hello()[2:34]
    reply = HandshakeResponder(DESTINATION, SOURCE.public_bytes, other).respond(
        hello[:2] + other_hash + hello[34:])
    with pytest.raises(HandshakeError, match="signature"):
        init.finish(reply)


def test_migration_contexts_are_unambiguous() -> None:
    base = dict(vm="ab", epoch=1, source="c", destination="d")
    contexts = {migration_context(**base),
                migration_context(**{**base, "vm": "a", "source": "bc"}),
                migration_context(**{**base, "epoch": 2}),
                migration_context(**{**base, "source": "d", "destination": "c"})}
    assert len(contexts) == 4
    with pytest.raises(SecureUsageError):
        migration_context(vm="", epoch=1, source="a", destination="b")


# -- tampering and replays ---------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(message=st.sampled_from(["hello", "reply", "finished"]), data=st.data())
def test_any_bit_flip_in_any_handshake_message_fails_it(message: str, data: st.DataObject) -> None:
    init, resp = pair()
    size = {"hello": HELLO_BYTES, "reply": REPLY_BYTES, "finished": FINISHED_BYTES}[message]
    bit = data.draw(st.integers(0, size * 8 - 1), label="bit")
    keys = []
    with pytest.raises(HandshakeError):
        hello = init.hello()
        reply = resp.respond(flip(hello, bit) if message == "hello" else hello)
        finished, init_keys = init.finish(flip(reply, bit) if message == "reply" else reply)
        keys.append(init_keys)
        keys.append(resp.finish(flip(finished, bit) if message == "finished" else finished))
    # A flipped finished can only be caught by the responder: the initiator got its keys,
    # but the responder never does, so no frame of the initiator will ever be accepted.
    assert len(keys) == (1 if message == "finished" else 0)


def test_a_replayed_hello_is_refused() -> None:
    init, resp = pair()
    hello = init.hello()
    reply = resp.respond(hello)
    with pytest.raises(HandshakeError, match="replayed or duplicated hello"):
        resp.respond(hello)
    finished, _ = init.finish(reply)
    resp.finish(finished)
    # Replayed to a fresh responder of the same migration: it answers with a fresh
    # ephemeral key, which the old finished message does not sign.
    fresh = HandshakeResponder(DESTINATION, SOURCE.public_bytes, CONTEXT)
    fresh.respond(hello)
    with pytest.raises(HandshakeError, match="initiator's signature"):
        fresh.finish(finished)


def test_a_replayed_reply_is_refused() -> None:
    init, resp = pair()
    old_reply = resp.respond(init.hello())
    new_init, _ = pair()
    new_init.hello()
    with pytest.raises(HandshakeError, match="responder's signature"):
        new_init.finish(old_reply)


def test_messages_out_of_turn_and_failed_handshakes_are_dead() -> None:
    init, resp = pair()
    with pytest.raises(HandshakeError, match="unexpected reply"):
        init.finish(b"\0" * REPLY_BYTES)
    with pytest.raises(HandshakeError, match="unexpected finished"):
        resp.finish(b"\0" * FINISHED_BYTES)
    hello = init.hello()
    with pytest.raises(SecureUsageError):
        init.hello()
    with pytest.raises(HandshakeError, match="bytes"):
        init.finish(b"short")
    for junk in (None, "text", memoryview(bytes(2 * HELLO_BYTES))[::2]):
        with pytest.raises(HandshakeError, match="must be bytes"):
            HandshakeResponder(DESTINATION, SOURCE.public_bytes, CONTEXT).respond(junk)  # type: ignore[arg-type]
    with pytest.raises(HandshakeError, match="failed"):
        init.finish(resp.respond(hello))  # one failure ends the handshake for good
    with pytest.raises(HandshakeError, match="type 2"):
        HandshakeResponder(DESTINATION, SOURCE.public_bytes, CONTEXT).respond(
            hello[:1] + b"\x02" + hello[2:])


def test_a_low_order_ephemeral_key_is_refused() -> None:
    init, resp = pair()
    hello = init.hello()
    with pytest.raises(HandshakeError, match="unusable"):
        resp.respond(hello[:98] + bytes(32))


def test_setup_errors_are_ours() -> None:
    with pytest.raises(SecureUsageError, match="itself"):
        HandshakeInitiator(SOURCE, SOURCE.public_bytes, CONTEXT)
    with pytest.raises(SecureUsageError, match="32 bytes"):
        HandshakeResponder(DESTINATION, b"\1" * 31, CONTEXT)
    with pytest.raises(SecureUsageError, match="context"):
        HandshakeInitiator(SOURCE, DESTINATION.public_bytes, b"")


# -- identities and key hygiene ------------------------------------------------------

def test_identity_signatures_verify_only_for_their_key_and_data() -> None:
    signature = SOURCE.sign(b"data")
    NodeIdentity.verify(SOURCE.public_bytes, b"data", signature)
    assert len(SOURCE.public_bytes) == 32 and len(signature) == 64
    for public, data, sig in [(DESTINATION.public_bytes, b"data", signature),
                              (SOURCE.public_bytes, b"date", signature),
                              (SOURCE.public_bytes, b"data", flip(signature, 3)),
                              (SOURCE.public_bytes, b"data", signature[:63]),
                              (SOURCE.public_bytes[:31], b"data", signature)]:
        with pytest.raises(BadSignatureError):
            NodeIdentity.verify(public, data, sig)


def test_secrets_cannot_be_pickled_copied_or_printed() -> None:
    init, resp = pair()
    init_keys, resp_keys = run(init, resp)
    traffic = list(init_keys._traffic.values())  # looked at only to check they never show
    channel = SecureChannel(resp_keys, role="responder")
    for secret_holder in (init_keys, channel, SOURCE, init, resp):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(secret_holder)
        with pytest.raises(TypeError):
            copy.copy(secret_holder)
        with pytest.raises(TypeError):
            copy.deepcopy(secret_holder)
    text = repr(init_keys) + str(init_keys) + repr(channel)
    assert "hidden" in repr(init_keys)
    for secret in traffic:
        assert secret.hex() not in text and repr(secret) not in text
    assert SOURCE.public_bytes.hex()[:16] in repr(SOURCE)


def test_finished_macs_are_checked_after_the_signatures() -> None:
    init, resp = pair()
    hello = init.hello()
    reply = resp.respond(hello)
    bad_mac = reply[:-32] + bytes(32)  # the signature still verifies: it does not cover the MAC
    with pytest.raises(HandshakeError, match="responder's finished MAC"):
        init.finish(bad_mac)
    init, resp = pair()
    finished, _ = init.finish(resp.respond(init.hello()))
    with pytest.raises(HandshakeError, match="initiator's finished MAC"):
        resp.finish(finished[:-32] + bytes(32))
