"""Login methods: each adds how an attempt is started and how its proof arrives; the attempt,
store, hub, socket and redeem are shared (``app.login.service``)."""
