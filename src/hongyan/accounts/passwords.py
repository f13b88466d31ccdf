"""Password policy: long enough, not a well-known password, not the email's name, not one kind of character.

Pure logic (no I/O) so every rule is table-tested. Used by sign-up, password reset and password change;
the first-start administrator gets a random password and skips it.
"""

from __future__ import annotations

import string

from hongyan.core.errors import InvalidRequest

# The most used passwords of 8+ characters (shorter ones fail the length rule anyway), from public breach
# lists, including the Chinese favourites (pinyin, 520/1314 love numbers, keyboard walks). Compared lowercase.
COMMON_PASSWORDS = frozenset(
    """
    12345678 123456789 1234567890 0123456789 12345678910 87654321 987654321 11111111 111111111 1111111111
    00000000 000000000 88888888 888888888 66666666 666666666 99999999 55555555 22222222 12121212
    11223344 12344321 123123123 123321123 147258369 159753456 741852963 1qaz2wsx 1q2w3e4r 1q2w3e4r5t
    1qaz2wsx3edc qazwsxedc qwertyui qwertyuiop asdfghjkl zxcvbnm123 qwe123456 qweasdzxc asdf1234 zxcvbnmasd
    password password1 password12 password123 passw0rd p@ssw0rd p@ssword admin123 admin1234 administrator
    root1234 welcome1 welcome123 letmein1 iloveyou iloveyou1 sunshine princess football baseball
    superman batman123 trustno1 whatever starwars computer michelle jennifer 123qweasd abc12345
    abcd1234 abc123456 a1234567 a12345678 a123456789 aa123456 aa12345678 qq123456 qq5201314 woaini1314
    woaini520 5201314520 1314520520 woaini123 wodemima iloveyou520 zhang123456 wang123456 li123456 huang123
    liu123456 chen123456 zhangwei wangwei123 dragon123 shadow123 monkey123 master123 1234qwer qwer1234
    q1w2e3r4 zaq12wsx changeme hongyan123 hongyan888 sms123456 test1234 test123456 guest123 user1234
    """.split()
)
CHARACTER_CLASSES = (string.ascii_lowercase, string.ascii_uppercase, string.digits)
MIN_CLASSES = 2


def character_classes(password: str) -> int:
    """How many of lowercase, uppercase, digits and anything else (symbols, spaces, CJK) appear."""
    seen = {i for ch in password for i, chars in enumerate(CHARACTER_CLASSES) if ch in chars}
    if any(not any(ch in chars for chars in CHARACTER_CLASSES) for ch in password):
        seen.add(len(CHARACTER_CLASSES))
    return len(seen)


def check_password_policy(password: str, *, email: str, min_length: int) -> None:
    """Raise InvalidRequest (field "password") when the password breaks a rule; the first rule broken wins."""
    if len(password) < min_length:
        raise InvalidRequest(
            "password_too_short", f"The password needs at least {min_length} characters.", field="password"
        )
    lowered = password.lower()
    local_part = email.strip().lower().split("@", 1)[0]
    if lowered in COMMON_PASSWORDS or lowered.rstrip("!.1") in COMMON_PASSWORDS:
        raise InvalidRequest(
            "password_too_common", "This password is one of the most used ones; choose another.", field="password"
        )
    if lowered == email.strip().lower() or (len(local_part) >= 3 and local_part in lowered):
        raise InvalidRequest(
            "password_too_common", "The password must not contain the name of your email address.",
            field="password",
        )
    if character_classes(password) < MIN_CLASSES:
        raise InvalidRequest(
            "password_too_simple",
            "Mix at least two kinds of characters: lowercase, uppercase, digits, symbols or spaces.",
            field="password",
        )
