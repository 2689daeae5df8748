"""The numbers and patterns every test shares, taken from the product where the product decides them: the admin is
`smsbot dev`'s, and what a code, a PIN or a YES code looks like comes from smsbot.keys."""

from __future__ import annotations

import pathlib
import re

from smsbot.keys import CODE_ALPHABET, CODE_LENGTH, CONFIRM_LENGTH, PIN_LENGTH
from smsbot.web.cli import DEV_ADMIN

ADMIN = DEV_ADMIN  # E.164, as the settings and the engine write a number: +14155550100
ADMIN_MSISDN = ADMIN.lstrip("+")  # as Vonage writes a msisdn in its webhooks: digits, no +
NUMBER = "14155550199"  # the group's virtual number (a msisdn, as SMSBOT_NUMBER is written)
SECRET = "test-secret-0123456789-abcdefghijklmnop"  # SMSBOT_SECRET
INVITEE = "14155550134"  # a number to invite, as Vonage writes a msisdn
# VONAGE_SIGNATURE_SECRET; >= 32 bytes: PyJWT warns on shorter HS256 keys
SIG_SECRET = "vonage-signature-secret-0123456789abcdef"
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"  # VONAGE_APPLICATION_ID

# A code or a PIN standing alone in a text or a page.
CODE = re.compile(rf"(?<![A-Za-z0-9])[{CODE_ALPHABET}]{{{CODE_LENGTH}}}(?![A-Za-z0-9])")
PIN = re.compile(rf"(?<!\d)\d{{{PIN_LENGTH}}}(?!\d)")
# The same in the sentences of smsbot.sms.texts that carry them: group 1 is the code, the PIN, the YES code.
INVITE_CODE = re.compile(rf"\bcode ({CODE.pattern})")
PIN_IS = re.compile(rf"PIN is ({PIN.pattern})")
YES = re.compile(rf"YES (\d{{{CONFIRM_LENGTH}}}) ")

# The Prometheus alert rules the README points to.
RULES_DIR = pathlib.Path(__file__).resolve().parent.parent.parent / "deploy" / "prometheus"
RULES = RULES_DIR / "smsbot-rules.yml"
