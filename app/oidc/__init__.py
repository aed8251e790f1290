"""The OpenID Provider: any site signs its users in with a WeChat scan (issue 10)."""
