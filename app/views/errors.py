"""Errors turned into answers, in one place: JSON under ``/api``, plain text for the WeChat
callback, HTML elsewhere. No stack trace ever reaches a client; it goes to the log."""

import logging

import redis
from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from ..wechat.errors import WeChatAPIError, WeChatError

log = logging.getLogger(__name__)

#: What a person is told when WeChat's API fails, by errcode.
WECHAT_ERRCODE_MESSAGES = {
    -1: "微信系统繁忙，请稍后重试。",
    45009: "今日生成二维码的次数已达微信上限，请明天再试。",
    45011: "请求过于频繁，请稍等片刻再试。",
    48001: "该公众号没有生成带参数二维码的权限。",
    40164: "服务器 IP 不在公众号的 IP 白名单中。",
}


#: Paths whose callers read JSON: our API, and the emulator's API and phone calls.
JSON_PATHS = ("/api/", "/_emulator/api/", "/_emulator/cgi-bin/", "/_emulator/sns/")


class APIError(Exception):
    """An answer for the JSON API: ``{"error": error, "message": message}`` with ``status``.

    Args:
        status: the HTTP status.
        error: a short machine-readable code, e.g. ``invalid_code``.
        message: what the person reads, in Chinese.
    """

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.message = message


def init_app(app: Flask) -> None:
    """Register the error handlers on ``app``."""
    app.register_error_handler(APIError, _api_error)
    app.register_error_handler(WeChatError, _wechat_error)
    app.register_error_handler(redis.RedisError, _storage_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)


def _answer(status: int, error: str, message: str) -> Response:
    if request.path.startswith(JSON_PATHS):
        response = jsonify(error=error, message=message)
    elif request.path.startswith("/wechat/"):
        response = Response(message, mimetype="text/plain")
    else:
        response = Response(render_template("error.html", status=status, message=message))
    response.status_code = status
    return response


def _api_error(exc: APIError) -> Response:
    return _answer(exc.status, exc.error, exc.message)


def _wechat_error(exc: WeChatError) -> Response:
    # The client has logged it (with its errcode), wherever it was called from.
    if isinstance(exc, WeChatAPIError):
        detail = WECHAT_ERRCODE_MESSAGES.get(exc.errcode, "微信接口返回了错误。")
        message = f"{detail}（errcode {exc.errcode}）"
    else:
        message = "暂时无法连接微信服务器。"
    return _answer(502, "wechat_unavailable", message + "请稍后重试。")


def _storage_error(exc: redis.RedisError) -> Response:
    log.error("Redis unavailable: %s", exc)
    return _answer(503, "storage_unavailable", "服务暂时不可用，请稍后重试。")


#: What a person reads for an HTTP error that carries no message of ours.
HTTP_MESSAGES = {
    400: "请求格式不正确。",
    403: "没有权限访问。",
    404: "页面不存在。",
    405: "不支持这个请求方法。",
    413: "请求内容太大。",
    429: "操作太频繁了，请稍等片刻再试。",
}


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    # abort(status, "our words") keeps them; werkzeug's stock English text is replaced.
    ours = exc.description if exc.description != type(exc).description else None
    message = ours or HTTP_MESSAGES.get(status, exc.name)
    return _answer(status, exc.name.lower().replace(" ", "_"), message)


def _unexpected_error(exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.path)
    return _answer(500, "internal_error", "服务器出错了，请稍后重试。")
