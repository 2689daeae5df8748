"""SMS gateways: the protocol and its errors (base), the in-process fake (fake), the Vonage SDK adapter (vonage).

The Vonage adapter is imported from `smsbot.gateway.vonage` by whoever builds it, so the rest of smsbot never loads
the SDK.
"""

from .base import DLR_ERRORS, Check, Gateway, SendError, VerifyConflict
from .fake import FakeGateway, FakeText

__all__ = ["DLR_ERRORS", "Check", "FakeGateway", "FakeText", "Gateway", "SendError", "VerifyConflict"]
