"""The load benchmark: ``python -m bench`` (``--help`` for the options).

Starts the deployment as in production (gunicorn with ``gunicorn.conf.py``: gevent workers)
against the real Redis on loopback, with WeChat played by the emulator in a server of its own,
drives it from this process, prints a table and writes ``docs/benchmarks.md``.

Modules, in the order a run uses them:

- ``options``: the command line, and the small numbers of ``--quick``.
- ``machine``: the machine, the versions, and this process's open-file limit.
- ``server``: gunicorn in a subprocess: start, stop, its workers' memory, CPU and sockets.
- ``stats``: percentiles, and CPU used by the server, Redis and this process over a window.
- ``httpclient``: a keep-alive HTTP/1.1 client on asyncio streams, light enough to load 2 cores.
- ``wechat``: WeChat's callbacks, signed as WeChat signs them.
- ``pages``: simulated browsers (attempts seeded in Redis) and their waiting websockets.
- ``push``: scan-to-push latency, and its floor.
- ``callbacks``: signed callbacks per second.
- ``qrcodes``: QR creations through the real API, and one sign-in through every public step.
- ``polling``: the same browsers served by 1-second polling, for comparison.
- ``workers``: gevent against gthread, the measurement behind the worker model.
- ``run``: the phases in order; ``report``: the table and the Markdown.
"""
