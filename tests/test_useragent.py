"""describe_browser: what the scanner is shown about the browser being signed in."""

import pytest

from app.login.useragent import describe_browser

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


@pytest.mark.parametrize(
    ("user_agent", "described"),
    [
        pytest.param(CHROME_WINDOWS, "Chrome 120 / Windows 10", id="chrome-windows"),
        pytest.param(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.2 Safari/605.1.15",
            "Safari 17 / Mac OS X 10",
            id="safari-macos",
        ),
        pytest.param(
            "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
            "Firefox 121 / Linux",
            id="firefox-linux",
        ),
        pytest.param(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.44(0x18002c2e) NetType/WIFI "
            "Language/zh_CN",
            "WeChat Browser 8 / iOS 17",
            id="wechat-iphone",
        ),
        pytest.param(
            "Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/81.0.4044.138 Safari/537.36 NetType/WIFI "
            "MicroMessenger/7.0.20.1781(0x6700143B) WindowsWechat(0x63090819) XWEB/8519 Flue",
            "WeChat Browser 7 / Windows 10",
            id="wechat-windows",
        ),
        pytest.param("", "", id="empty"),
        pytest.param("garbage", "", id="garbage"),
        pytest.param("Mozilla/5.0", "", id="bare-mozilla"),
        pytest.param("\x00\xff<script>alert(1)</script>", "", id="control-and-markup"),
        pytest.param("中文浏览器/1.0", "", id="chinese"),
    ],
)
def test_describe_browser(user_agent, described):
    assert describe_browser(user_agent) == described


def test_a_100_kb_header_is_read_by_its_start():
    assert describe_browser(CHROME_WINDOWS + " " + "x" * 100_000) == "Chrome 120 / Windows 10"


@pytest.mark.parametrize(
    "user_agent",
    [
        pytest.param("A" * 100_000, id="letters"),
        pytest.param("(" * 100_000, id="parentheses"),
        pytest.param("Mozilla/5.0 (" * 8_000, id="repeated-prefix"),
        pytest.param("Mozilla/5.0 (Linux; Android " + "1" * 100_000, id="endless-version"),
    ],
)
def test_a_100_kb_header_is_cut_before_parsing(user_agent):
    described = describe_browser(user_agent)

    assert described == describe_browser(user_agent[:512])
    assert len(described) < 1100
