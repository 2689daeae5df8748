"""Phone numbers: every way of writing one number gives one E.164 form; unusable numbers are refused."""

from __future__ import annotations

import pytest

from smsbot import phone
from smsbot.keys import Keys

SAME = ["+1 (415) 555-0134", "415-555-0134", "(415) 555 0134", "4155550134", "+14155550134", "001 415 555 0134",
        "1-415-555-0134"]


@pytest.mark.parametrize("typed", SAME)
def test_forms_of_one_number_are_one_person(typed: str) -> None:
    assert phone.normalize(typed, "US") == "+14155550134"


def test_vonage_msisdn_matches_the_typed_form() -> None:
    keys = Keys("k" * 32)
    assert keys.phone_key(phone.from_msisdn("14155550134", "US")) == keys.phone_key(phone.normalize(SAME[0], "US"))


def test_national_format_uses_the_default_region() -> None:
    assert phone.normalize("020 7946 0018", "GB") == "+442079460018"
    assert phone.normalize("+44 20 7946 0018", "US") == "+442079460018"


@pytest.mark.parametrize("typed,reason", [
    ("alice", "it has no digits"),
    ("12", "it is not a valid number"),
    ("+1 900 555 0199", "it is a premium-rate number"),
    ("+1 555 000 0001", "it is not a valid number"),
    ("", "it is not a phone number"),
    ("1" * 60, "it is not a phone number"),
])
def test_unusable_numbers_say_why(typed: str, reason: str) -> None:
    with pytest.raises(phone.PhoneError) as caught:
        phone.normalize(typed, "US")
    assert caught.value.reason == reason


def test_mask_keeps_only_two_digits() -> None:
    assert phone.mask("+14155550134") == "**34"
    assert "4155" not in phone.mask("+14155550134")


def test_mask_shows_the_last_two_digits_of_whatever_it_is_given() -> None:
    """mask's shortcut for E.164 (its last two characters) agrees with its rule for anything else: the last two of
    the characters that are digits, or nothing when there are fewer than two."""
    import random

    def rule(number: str) -> str:
        digits = [ch for ch in number if ch.isdigit()]
        return "**" + "".join(digits[-2:]) if len(digits) >= 2 else "**"

    rng = random.Random(19)
    alphabet = "0123456789 +-().\u00a0/a²٣"
    typed = ["", "7", "42", "+1 (415) 555-01 34", "0034 ", "12²", "+44 20 7946 0958.", "٣٣", "1a2", "+"]
    for number in typed + ["".join(rng.choices(alphabet, k=rng.randint(0, 14))) for _ in range(5000)]:
        assert phone.mask(number) == rule(number), number


def test_a_number_has_a_type_exactly_when_it_is_valid() -> None:
    """normalize asks phonenumbers for the number's type only, and takes UNKNOWN for "not valid": that must hold for
    every region's example numbers of every type, and for digits that are not numbers at all."""
    import random

    import phonenumbers
    from phonenumbers import PhoneNumberType

    rng = random.Random(19)
    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        candidates = [phonenumbers.example_number_for_type(region, kind) for kind in PhoneNumberType.values()]
        code = phonenumbers.country_code_for_region(region)
        candidates += [phonenumbers.parse(f"+{code}{rng.randrange(10 ** 9, 10 ** 10)}", None) for _ in range(5)]
        for number in filter(None, candidates):
            valid = phonenumbers.is_valid_number(number)
            assert valid == (phonenumbers.number_type(number) != PhoneNumberType.UNKNOWN), (region, number)
            checked += 1
    assert checked > 2000
