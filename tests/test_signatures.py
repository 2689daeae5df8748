"""Webhook signatures against Vonage's official test vectors, and every way a check must fail."""

from __future__ import annotations

import hashlib
import json

import jwt
import pytest

from smsbot.errors import SignatureError
from smsbot.signatures import check_jwt, check_sms, sms_signature

V3 = {"a": "1", "b": "2", "timestamp": "1461605396"}
V3_SIGS = {
    "md5hash": "6af838ef94998832dbfc29020b564830",
    "md5": "c15c21ced558c93a226c305f58f902f2",
    "sha1": "3e19a4e6880fdc2c1426bfd0587c98b9532f0210",
    "sha256": "a321e824b9b816be7c3f28859a31749a098713d39f613c80d455bbaffae1cd24",
    "sha512": "812a18f76680fa0fe1b8bd9ee1625466ceb1bd96242e4d050d2cfd9a7b40166c63ed26ec9702168781b6edcf1633db8ff"
              "95af9341701004eec3fcf9550572ee8",
}
PHP = {"message-timestamp": "2013-11-21 15:27:30", "messageId": "020000001B0FE827", "msisdn": "14843472194",
       "text": "Test again", "timestamp": "1385047698", "to": "13239877404", "type": "text"}
PHP_SIGS = {
    "md5hash": "d2e7b1dc968737c5998ad624e02f90b7",
    "md5": "DDEBD46008C2D4E93CCE578A332A52D5",
    "sha1": "27D0D05C2876C7CB1720DBCDBA4D492E1E55C09A",
    "sha256": "DDB8397C2B90AAC7F3882D306475C9A5058C92322EEF43C92B298B6E0FC0D330",
    "sha512": "E0D3C650F8C9D1A5C174D10DDDBFB003E561F59B265616208B0487C5D819481CD3C311D59CF6165ECD1139622D5BA3A256C0D7"
              "63AC4A9AD9144B5A426B94FE82",
}
PHP_AMP = {"keyword": "TEST", "message-timestamp": "2017-04-04 22:57:47", "messageId": "0B00000042AC53BD",
           "msisdn": "14843472194", "nonce": "929d6744-bd28-42c8-b6cf-31d5b4f43732", "text": "Test with & and =",
           "timestamp": "1491346667", "to": "12192259404", "type": "text"}
SDK4 = {"param1": "value1", "param2": "value2", "timestamp": "1234567890"}


@pytest.mark.parametrize("method", sorted(V3_SIGS))
def test_v3_sdk_vectors(method: str) -> None:
    assert sms_signature(V3, "secret", method) == V3_SIGS[method]


@pytest.mark.parametrize("method", sorted(PHP_SIGS))
def test_php_sdk_vectors_of_a_real_inbound_text(method: str) -> None:
    assert sms_signature(PHP, "my_secret_key_for_testing", method) == PHP_SIGS[method].lower()
    check_sms({**PHP, "sig": PHP_SIGS[method]}, "my_secret_key_for_testing", method, now=1385047700)


def test_values_with_ampersand_and_equals_are_sanitised() -> None:
    assert sms_signature(PHP_AMP, "my_secret_key_for_testing", "md5hash") == "e06d9763e3fd0b9c31beb5fc2fcb011c"
    assert sms_signature({"param1": "value&1", "param2": "value=2", "timestamp": "1234567890"},
                         "signature_secret", "md5") == "2bbf0abafb2c55e5af6231513896a2ac"


def test_v4_sdk_vectors() -> None:
    assert sms_signature(SDK4, "signature_secret", "sha256") == \
        "280c4320703dbc98bfa22db676655ed2acfbfe8792b062ff7622e67f1183c287"
    assert sms_signature(SDK4, "signature_secret", "md5") == "724c2bf6ca423c36e20631b11d1c5753"


def signed(method: str = "sha256") -> dict[str, str]:
    return {**PHP, "sig": PHP_SIGS[method]}


@pytest.mark.parametrize("params,why", [
    ({k: v for k, v in PHP.items()}, "no sig"),
    ({**signed(), "sig": "0" * 64}, "sig does not match"),
    ({**signed(), "text": "Test again!"}, "sig does not match"),
    ({**signed(), "msisdn": "14843472195"}, "sig does not match"),
    ({**signed(), "extra": "x"}, "sig does not match"),
])
def test_missing_wrong_or_tampered_signatures_are_refused(params: dict[str, str], why: str) -> None:
    with pytest.raises(SignatureError, match=why):
        check_sms(params, "my_secret_key_for_testing", "sha256", now=1385047700)


def test_a_signature_made_with_another_method_is_refused() -> None:
    with pytest.raises(SignatureError):
        check_sms(signed("sha1"), "my_secret_key_for_testing", "sha256", now=1385047700)
    with pytest.raises(SignatureError):
        check_sms(signed("md5hash"), "my_secret_key_for_testing", "md5", now=1385047700)


def test_stale_and_future_timestamps_are_refused() -> None:
    with pytest.raises(SignatureError, match="old"):
        check_sms(signed(), "my_secret_key_for_testing", "sha256", now=1385047698 + 26 * 3600)
    with pytest.raises(SignatureError, match="old"):
        check_sms(signed(), "my_secret_key_for_testing", "sha256", now=1385047698 - 3600)


JWT_SECRET = "qwertyuiopasdfghjklzxcvbnm123456"
SDK_TOKEN = ("eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJPbmxpbmUgSldUIEJ1aWxkZXIiLCJpYXQiOjE2OTc2MzQ2ODAsImV4cCI6"
             "MzMyNTQ1NDA4MjgsImF1ZCI6IiIsInN1YiI6IiJ9.88vJc3I2HhuqEDixHXVhc9R30tA6U_HQHZTC29y6CGM")


def test_sdk_jwt_vector_signature() -> None:
    # The SDK's vector has no payload_hash, so the signature passes and the body check is what refuses it.
    with pytest.raises(SignatureError, match="payload_hash"):
        check_jwt(f"Bearer {SDK_TOKEN}", b"{}", JWT_SECRET, now=1697634680)
    with pytest.raises(SignatureError, match="stale"):
        check_jwt(f"Bearer {SDK_TOKEN}", b"{}", JWT_SECRET, now=1697634680 + 26 * 3600)
    with pytest.raises(SignatureError, match="InvalidSignatureError"):
        check_jwt(f"Bearer {SDK_TOKEN}", b"{}", "asdf", now=1697634680)
    with pytest.raises(SignatureError, match="DecodeError"):
        check_jwt("Bearer asdf", b"{}", JWT_SECRET, now=1697634680)


def make_token(body: bytes, iat: float, secret: str = JWT_SECRET, **claims: object) -> str:
    payload = {"iat": int(iat), "jti": "c5ba8f24", "iss": "Vonage", "api_key": "a1b2c3d",
               "payload_hash": hashlib.sha256(body).hexdigest(), **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def test_messages_api_jwt_checks() -> None:
    body = json.dumps({"message_uuid": "u1", "text": "HELP"}).encode()
    now = 1_800_000_000
    assert check_jwt(f"Bearer {make_token(body, now)}", body, JWT_SECRET, now)["iss"] == "Vonage"
    failures = {
        "no header": ("", body),
        "not bearer": (f"Basic {make_token(body, now)}", body),
        "tampered body": (f"Bearer {make_token(body, now)}", body.replace(b"HELP", b"STOP")),
        "stale": (f"Bearer {make_token(body, now - 26 * 3600)}", body),
        "future": (f"Bearer {make_token(body, now + 3600)}", body),
        "wrong secret": (f"Bearer {make_token(body, now, secret='another-secret-of-32-characters!')}", body),
        "no payload hash": (f"Bearer {make_token(body, now, payload_hash='')}", body),
        "alg none": ("Bearer " + jwt.encode({"iat": now, "payload_hash": hashlib.sha256(body).hexdigest()},
                                            "", algorithm="none"), body),  # "": no key, as alg none has
    }
    for name, (header, sent) in failures.items():
        with pytest.raises(SignatureError):
            check_jwt(header, sent, JWT_SECRET, now)
            pytest.fail(name)
