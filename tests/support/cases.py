"""Lists of hostile inputs that more than one test file runs through."""

# Values of `rd` that must never be followed, with why. The public host is group.example.org; in the cookie-domain
# cases, example.org is SMSBOT_COOKIE_DOMAIN.
HOSTILE_RD = [
    ("https://evil.example/", "another host"),
    ("https://group.example.org@evil.example/", "userinfo: the host is evil.example"),
    ("https://user:pw@group.example.org/", "userinfo of any kind"),
    ("//evil.example/", "scheme-relative"),
    ("///evil.example/", "three slashes"),
    ("/\\evil.example/", "backslash after the slash"),
    ("\\\\evil.example", "backslashes only"),
    ("https:\\\\evil.example", "backslashes for slashes"),
    ("/%2F%2Fevil.example", "encoded slashes"),
    ("/%2f%5cevil.example", "encoded slash and backslash, lower case"),
    ("/%252F%252Fevil.example%2F", "a double-encoded slash, once decoded"),
    ("/\t/evil.example", "a tab, which browsers drop"),
    ("/\n/evil.example", "a newline"),
    ("/\x00", "a NUL"),
    (" https://group.example.org/", "leading space"),
    ("https://group.example.org.evil.com/", "look-alike: the real host as a prefix"),
    ("https://evilgroup.example.org/", "look-alike: the real host as a suffix without a dot"),
    ("https://group.example.org./", "trailing dot"),
    ("https://grоup.example.org/", "Cyrillic o"),
    ("https://xn--grup-0ve.example.org/", "another host, punycode"),
    ("javascript:alert(1)", "another scheme"),
    ("data:text/html,hi", "data URL"),
    ("ftp://group.example.org/", "ftp"),
    ("https:group.example.org", "no authority"),
    ("https://group.example.org:99999/", "port out of range"),
    ("https://group.example.org:x/", "port not a number"),
    ("wiki", "a relative path"),
    ("https://wiki.example.org/", "a sibling host without SMSBOT_COOKIE_DOMAIN"),
    ("/" + "a" * 2100, "too long"),
]


# Every way a PostgreSQL URL can carry a password that asyncpg reads, and the text that must never be shown.
PASSWORD_URLS = [
    ("postgresql://smsbot:hunter2-pw@db.example.org:5432/smsbot", "hunter2-pw"),
    ("postgres://smsbot:hunter2-pw@db.example.org/smsbot", "hunter2-pw"),
    ("postgresql://smsbot@db.example.org/smsbot?password=hunter2-pw", "hunter2-pw"),
    ("postgresql://smsbot@db.example.org/smsbot?sslmode=require&password=hunter2-pw&application_name=x",
     "hunter2-pw"),
    ("postgresql://smsbot@db.example.org/smsbot?password=first-pw&password=hunter2-pw", "hunter2-pw"),
    ("postgresql://smsbot@db.example.org/smsbot?password=first-pw&password=hunter2-pw", "first-pw"),
    ("postgresql://smsbot@db.example.org/smsbot?pass%77ord=hunter2-pw", "hunter2-pw"),
    ("postgresql://smsbot@db.example.org/smsbot?PASSWORD=hunter2-pw", "hunter2-pw"),
    ("postgresql://smsbot:hunter2%40pw%3Ax@db.example.org/smsbot", "hunter2%40pw%3Ax"),
    ("postgresql://smsbot:hunter2%40pw%3Ax@db.example.org/smsbot", "hunter2@pw:x"),
    ("postgresql://smsbot@db.example.org/smsbot?password=hunter2%26pw%3D", "hunter2&pw="),
    ("postgresql://smsbot@db.example.org/smsbot?password=hunter2+pw", "hunter2 pw"),
    ("postgresql://smsbot:hunter2:pw@db.example.org/smsbot", "hunter2:pw"),
    ("postgresql://smsbot:hunter2-pw@db1.example.org:5432,db2.example.org:5433/smsbot", "hunter2-pw"),
    ("postgresql://smsbot@db.example.org/smsbot?sslmode=verify-full&sslpassword=hunter2-pw", "hunter2-pw"),
    ("postgresql://smsbot:@db.example.org/smsbot?password=hunter2-pw", "hunter2-pw"),
    ("POSTGRESQL://smsbot:hunter2-pw@db.example.org/smsbot", "hunter2-pw"),
]
