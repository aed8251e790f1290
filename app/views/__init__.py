"""Blueprints: pages, the JSON API, the websocket, the WeChat callback, error handling."""
