"""The login domain: attempts and one-time codes, users, and the cross-worker push."""
