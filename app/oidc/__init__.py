"""The OpenID Provider: Authlib server wiring, clients, tokens, sessions and logout."""
