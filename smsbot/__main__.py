"""`python -m smsbot`: the same entry point as the console script."""

from smsbot.web.cli import main

main()
