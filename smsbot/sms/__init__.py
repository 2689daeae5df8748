"""The SMS conversation: the commands and states people text, what each does, and the words of the replies.

The machinery around it (inbound pipeline, outbox, sign-in, store, gateway) is in the package above.
"""
