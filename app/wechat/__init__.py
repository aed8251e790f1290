"""The WeChat Official Account protocol, free of Flask: API client, signatures, messages."""
