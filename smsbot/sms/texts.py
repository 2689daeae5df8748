"""Every text a person can receive from smsbot, in one place, so they can be read and reviewed as a whole.

Each must fit one GSM-7 segment (160 characters) with realistic values; tests/test_texts.py checks that. A number
that a constant decides comes from it: formatted in here, or a placeholder its sender fills.
"""

from __future__ import annotations

import math
import time

from ..keys import CODE_LENGTH, CONFIRM_LENGTH

GROUP_NAME_MAX = 24

# Invitations and joining
INVITE = "{group}: you're invited to join. Reply with code {code} within {hours} hours, then choose a username. Reply STOP to opt out."
INVITE_AS = "{group}: you're invited to join as {username}. Reply with code {code} within {hours} hours. Reply STOP to opt out."
ASK_USERNAME = "Welcome to {group}! Reply with the username you want: {shortest}-{longest} letters, digits, _ or -."
USERNAME_INVALID = "A username is {shortest}-{longest} letters, digits, _ or -, with at least one letter, and not a command word. Reply with another one."
USERNAME_TAKEN = "Sorry, {username} is taken. Reply with another username."
WRONG_CODE = f"That code isn't right. Check the invite text and reply with the {CODE_LENGTH}-character code."
CODE_HINT = f"Reply with the {CODE_LENGTH}-character code from your invite to join {{group}}."
TOO_MANY_CODES = "Too many wrong codes, so this invite is cancelled. Ask an admin to invite you again."
INVITE_EXPIRED = "Your invite to {group} has expired. Ask an admin to invite you again."

JOINED = "{username} ({hint}) joined {group} with your invite."

# PINs
PIN = "Your {group} PIN is {pin}. Sign in as {username} at {url}/login in {minutes} min. Never share it."
PIN_VERIFY = "Your {group} PIN comes in the next text. Sign in as {username} at {url}/login in {minutes} min."
PIN_CAP = "You've asked for a lot of PINs this hour. Wait a while, then text LOGIN again."
PIN_CAP_DAY = "You've had the most PINs allowed in a day. Text LOGIN again tomorrow."
LOCKED = "Your sign-in is locked after too many wrong PINs. Ask an admin to unlock it."
UNLOCKED = "An admin unlocked your sign-in to {group}. Text LOGIN for a new PIN."
MEMBER_HINT = "Text LOGIN to get a PIN for signing in on a new device, or HELP for help."

# Everyone
STOPPED = "You won't get more texts from {group}. Reply START to opt back in."
STARTED = "You're opted back in to texts from {group}. Reply HELP for help, STOP to opt out."
HELP_STRANGER = "This number runs sign-in for {group}. Only invited members get replies. Reply STOP to opt out."
HELP_INVITEE = "Reply with the code from your invite to join {group}. Reply STOP to opt out."
HELP_ROLE = "Commands: {usages}. HELP <command> tells more."
HELP_COMMAND = "{usage}: {help}"

# Devices
DEVICES = "Signed in on {count}: {items}. Text LOGOUT to sign out everywhere."
NO_DEVICES = "You're not signed in on any device. Text LOGIN for a PIN to sign in."
LOGGED_OUT = "Signed out on {count}. Text LOGIN for a PIN to sign in again."
ADMIN_LOGGED_OUT = "Signed {username} out on {count}. They are still a member and can text LOGIN."
LOGOUT_WHO = "To sign a member out on every device: LOGOUT <username>. LOGOUT alone is for your own devices."

# Confirmations of admin commands (a spoofed sender can't read the code)
CONFIRM = "{what}? Reply YES {code} within {minutes} min. Didn't send it? Don't reply: someone may be using your number."
CONFIRM_WRONG = f"That code isn't right. Reply YES and the {CONFIRM_LENGTH}-digit code from our last text."
CONFIRM_DROPPED = "Wrong code {tries} times, so the {command} is dropped. Send it again if you meant it."
CONFIRM_EXPIRED = "That {command} waited more than {minutes} min, so it's dropped. Send it again if you meant it."
NOTHING_TO_CONFIRM = "Nothing is waiting for a YES from you."
CONFIRM_CAPPED = "Too many commands asked for a YES this hour; wait an hour. If they weren't all yours, someone is using your number."
CONFIRM_LOCKED = "{wrong} wrong YES codes from your number in 24 hours: commands that need YES are refused until {until} UTC. Didn't send them? Tell the other admins."
CONFIRM_LOCKED_ADMINS = "Admin number {number} sent {wrong} wrong YES codes in 24 hours: its commands that need YES are refused until {until} UTC. Someone may be using it."
ADMIN_CAPPED = "Too many texts from your number: replies pause until {time} UTC. If you didn't send them all, someone is using your number."

# Admin replies
INVITED = "Invited {who}. Their code is valid for {hours} hours."
REINVITED = "Invited {who} again with a new code; the old code no longer works."
BAD_NUMBER = "Can't use {typed}: {reason}. Example: {example}"
ALREADY_MEMBER = "That number is already a member, as {username}."
ADMIN_USERNAME_TAKEN = "The username {username} is taken. Pick another one, or leave it out and they'll choose."
ADMIN_USERNAME_INVALID = "A username is {shortest}-{longest} letters, digits, _ or -, with at least one letter. Try {usage} again."
NUMBER_OPTED_OUT = "That number has opted out of texts (STOP). They must text START to this number first."
REVOKED = "Revoked {username}. Every device they signed in on is signed out."
INVITE_CANCELLED = "Cancelled the invite for {who}."
NOT_FOUND = "No member or invite matches {what}. Text LIST to see them."
LIST_EMPTY = "No members or invites yet. Text {usage} to invite someone."
LIST_PAGE = "{header}{items}{footer}"
LIST_HEADER = "Page {page}/{pages}: "
LIST_MORE = " {command} {next} for more."
LIST_NO_PAGE = "There is no page {page}; the list has {pages} page(s)."
NOT_YOURS = "{name} is for {who} only. Text HELP for the commands you can use."
UNLOCKED_ADMIN = "Unlocked {username}. They can text LOGIN for a new PIN."
LOCKOUT_ALERT = "{username} is locked after {failures} wrong PINs in a row. If it was them, INVITE their number to unlock."
BUDGET_REACHED = "Daily SMS budget of {budget} texts reached: until midnight UTC only replies to admins go out."
INVITE_OVER_BUDGET = "Daily SMS budget of {budget} texts reached, so that invite can't go out before midnight UTC. Send it again then."
REPLIES_CAPPED = "Half of today's SMS budget of {budget} went to replies: until midnight UTC, apart from replies to admins, only invites and PINs go out."
LOG_EMPTY = "Nothing logged yet."
UNKNOWN = "Unknown command {word}. {hint}Text HELP for the list."
DID_YOU_MEAN = "Did you mean {name}? "


def cut_group(name: str) -> str:
    return name if len(name) <= GROUP_NAME_MAX else name[: GROUP_NAME_MAX - 1].rstrip() + "."


def shorten(value: str, limit: int = 20) -> str:
    """User-typed text echoed back in a reply, cut so the reply still fits one segment."""
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 2] + ".."


def utc(at: float, *, day: bool = False) -> str:
    """A time as texts give it: UTC, rounded up to the minute ("14:06", or with the day "Jan 16 14:06")."""
    return time.strftime("%b %d %H:%M" if day else "%H:%M", time.gmtime(math.ceil(at / 60) * 60))
