"""The channeld_* families as a scraper sees them, and the dashboard and alerts built on them."""

from __future__ import annotations

import asyncio
import json
import platform
import re
import shutil
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import ClientSession, web
from prometheus_client.parser import text_string_to_metric_families

from daemon.metrics import CHANNEL_STATES, EventLoopLagMonitor, Metrics, metrics_handler

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "systemd" / "prometheus-alerts.yml"
DASHBOARD = ROOT / "systemd" / "grafana-dashboard.json"
CH = ("ch1", "dingtalk")

# family -> (type, label names of its samples, "le" left out)
FAMILIES = {
    "channeld_build_info": ("gauge", {"version", "python"}),
    "channeld_channel_up": ("gauge", {"channel", "platform"}),
    "channeld_channel_state": ("gauge", {"channel", "platform", "state"}),
    "channeld_channel_reconnects": ("counter", {"channel", "platform"}),
    "channeld_channel_last_event_timestamp_seconds": ("gauge", {"channel", "platform"}),
    "channeld_messages_received": ("counter", {"channel", "platform"}),
    "channeld_messages_duplicate": ("counter", {"channel", "platform"}),
    "channeld_messages_ignored": ("counter", {"channel", "platform"}),
    "channeld_messages_invalid": ("counter", {"channel", "platform"}),
    "channeld_frames_dropped": ("counter", {"channel", "platform", "reason"}),
    "channeld_ack_latency_seconds": ("histogram", {"channel", "platform"}),
    "channeld_reply_first_update_seconds": ("histogram", {"channel", "platform"}),
    "channeld_replies": ("counter", {"channel", "platform", "outcome"}),
    "channeld_platform_requests": ("counter", {"channel", "platform", "endpoint", "status"}),
    "channeld_llm_request_seconds": ("histogram", {"agent"}),
    "channeld_llm_tokens": ("counter", {"agent", "kind"}),
    "channeld_event_loop_lag_seconds": ("histogram", set()),
}


def scrape(metrics: Metrics) -> dict[str, Any]:
    body, _ = metrics.render()
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def value(metrics: Metrics, sample: str, **labels: str) -> float | None:
    """One sample's value, or None when the series does not exist."""
    for family in scrape(metrics).values():
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return None


def drive_everything(metrics: Metrics) -> None:
    metrics.set_channel_state(*CH, "connected")
    metrics.reconnected(*CH)
    metrics.message_received(*CH, at=1_700_000_000.5)
    metrics.message_duplicate(*CH)
    metrics.message_ignored(*CH)
    metrics.message_invalid(*CH)
    metrics.frame_dropped(*CH)
    metrics.frame_dropped(*CH, "unstorable")
    metrics.ack_latency(*CH, 0.003)
    metrics.reply_first_update(*CH, 1.2)
    metrics.reply(*CH, "replied")
    metrics.platform_request(*CH, "card.streaming", 200)
    metrics.llm_request("default", 4.5)
    metrics.llm_tokens("default", prompt=120, completion=80)
    metrics.loop_lag(0.002)


def test_every_family_is_exposed_with_its_type_and_labels() -> None:
    metrics = Metrics(version="1.2.3")
    drive_everything(metrics)
    families = scrape(metrics)
    for name, (kind, labels) in FAMILIES.items():
        assert name in families, name
        family = families[name]
        assert family.type == kind, name
        assert family.samples, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    assert (
        value(metrics, "channeld_build_info", version="1.2.3", python=platform.python_version())
        == 1
    )


def test_build_info_defaults_to_the_installed_version() -> None:
    family = scrape(Metrics())["channeld_build_info"]
    (sample,) = family.samples
    assert sample.labels["version"]
    assert sample.value == 1


def test_exactly_one_state_is_set_and_up_follows_connected() -> None:
    metrics = Metrics()
    for state in (*CHANNEL_STATES, "connected", "disabled"):
        metrics.set_channel_state(*CH, state)
        states = {
            s.labels["state"]: s.value for s in scrape(metrics)["channeld_channel_state"].samples
        }
        assert set(states) == set(CHANNEL_STATES)
        assert [k for k, v in states.items() if v == 1] == [state]
        assert value(metrics, "channeld_channel_up", channel="ch1", platform="dingtalk") == (
            1 if state == "connected" else 0
        )
    with pytest.raises(ValueError, match="unknown channel state"):
        metrics.set_channel_state(*CH, "sleeping")


def test_a_new_channel_exposes_its_counters_at_zero() -> None:
    metrics = Metrics()
    metrics.set_channel_state(*CH, "connecting")
    labels = {"channel": "ch1", "platform": "dingtalk"}
    for sample in (
        "channeld_messages_received_total",
        "channeld_messages_duplicate_total",
        "channeld_channel_reconnects_total",
        "channeld_ack_latency_seconds_count",
    ):
        assert value(metrics, sample, **labels) == 0, sample
    for outcome in ("replied", "failed", "cancelled"):
        assert value(metrics, "channeld_replies_total", **labels, outcome=outcome) == 0
    for reason in ("unreadable", "too_deep", "unstorable"):
        assert value(metrics, "channeld_frames_dropped_total", **labels, reason=reason) == 0
    # No message yet: a timestamp of 0 would read as "silent since 1970".
    assert value(metrics, "channeld_channel_last_event_timestamp_seconds", **labels) is None


def test_counters_and_histograms_move_with_the_calls() -> None:
    metrics = Metrics()
    labels = {"channel": "ch1", "platform": "dingtalk"}
    for _ in range(3):
        drive_everything(metrics)
    metrics.reply(*CH, "failed")
    metrics.platform_request(*CH, "card.streaming", 429)
    metrics.message_received(*CH, at=1_700_000_100.0)

    assert value(metrics, "channeld_messages_received_total", **labels) == 4
    assert value(metrics, "channeld_channel_last_event_timestamp_seconds", **labels) == (
        1_700_000_100.0
    )
    for sample in ("duplicate", "ignored", "invalid"):
        assert value(metrics, f"channeld_messages_{sample}_total", **labels) == 3
    assert value(metrics, "channeld_channel_reconnects_total", **labels) == 3
    assert value(metrics, "channeld_replies_total", **labels, outcome="replied") == 3
    assert value(metrics, "channeld_replies_total", **labels, outcome="failed") == 1
    ep = {"endpoint": "card.streaming"}
    assert value(metrics, "channeld_platform_requests_total", **labels, **ep, status="200") == 3
    assert value(metrics, "channeld_platform_requests_total", **labels, **ep, status="429") == 1
    # 3 ms lands above the 2.5 ms bucket and inside the 5 ms one.
    ack = "channeld_ack_latency_seconds_bucket"
    assert value(metrics, ack, **labels, le="0.0025") == 0
    assert value(metrics, ack, **labels, le="0.005") == 3
    assert value(metrics, "channeld_ack_latency_seconds_sum", **labels) == pytest.approx(0.009)
    assert value(metrics, "channeld_reply_first_update_seconds_count", **labels) == 3
    assert value(metrics, "channeld_llm_request_seconds_count", agent="default") == 3
    assert value(metrics, "channeld_llm_request_seconds_sum", agent="default") == 13.5
    assert value(metrics, "channeld_llm_tokens_total", agent="default", kind="prompt") == 360
    assert value(metrics, "channeld_llm_tokens_total", agent="default", kind="completion") == 240
    assert value(metrics, "channeld_event_loop_lag_seconds_count") == 3
    dropped = "channeld_frames_dropped_total"
    assert value(metrics, dropped, **labels, reason="unreadable") == 3
    assert value(metrics, dropped, **labels, reason="unstorable") == 3
    assert value(metrics, dropped, **labels, reason="too_deep") == 0
    with pytest.raises(ValueError, match="unknown reply outcome"):
        metrics.reply(*CH, "lost")
    with pytest.raises(ValueError, match="unknown drop reason"):
        metrics.frame_dropped(*CH, "bored")


def test_remove_channel_forgets_only_that_channel() -> None:
    metrics = Metrics()
    drive_everything(metrics)
    metrics.set_channel_state("ch2", "dingtalk", "disabled")
    metrics.remove_channel("ch1")
    for family in scrape(metrics).values():
        for sample in family.samples:
            assert sample.labels.get("channel") != "ch1", sample
    assert value(metrics, "channeld_channel_up", channel="ch2", platform="dingtalk") == 0
    assert value(metrics, "channeld_llm_tokens_total", agent="default", kind="prompt") == 120

    # A channel created again under the same id starts from zero.
    metrics.message_received(*CH, at=1.0)
    labels = {"channel": "ch1", "platform": "dingtalk"}
    assert value(metrics, "channeld_messages_received_total", **labels) == 1
    assert value(metrics, "channeld_messages_duplicate_total", **labels) == 0
    metrics.remove_channel("never-seen")


def test_two_instances_share_nothing() -> None:
    first, second = Metrics(), Metrics()
    drive_everything(first)
    labels = {"channel": "ch1", "platform": "dingtalk"}
    assert value(first, "channeld_messages_received_total", **labels) == 1
    assert value(second, "channeld_messages_received_total", **labels) is None
    assert value(second, "channeld_event_loop_lag_seconds_count") == 0


async def test_metrics_endpoint_serves_the_exposition_format() -> None:
    metrics = Metrics()
    drive_everything(metrics)
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(metrics))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with (
            ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=")
            body = await response.text()
    finally:
        await runner.cleanup()
    names = {f.name for f in text_string_to_metric_families(body)}
    assert set(FAMILIES) <= names


async def wait_for_samples(metrics: Metrics, count: int) -> None:
    async with asyncio.timeout(5):
        while (value(metrics, "channeld_event_loop_lag_seconds_count") or 0) < count:
            await asyncio.sleep(0.01)


@pytest.mark.allow_loop_block
async def test_lag_monitor_observes_a_blocked_loop() -> None:
    metrics = Metrics()
    monitor = EventLoopLagMonitor(metrics, interval=0.05)
    monitor.start()
    try:
        await asyncio.sleep(0)  # let the monitor take its first timestamp
        time.sleep(0.3)  # the stall the monitor exists to measure
        await wait_for_samples(metrics, 1)
    finally:
        await monitor.stop()
    assert value(metrics, "channeld_event_loop_lag_seconds_sum") >= 0.2  # type: ignore[operator]
    assert value(metrics, "channeld_event_loop_lag_seconds_bucket", le="0.1") == 0


async def test_lag_monitor_stop_leaves_no_task() -> None:
    metrics = Metrics()
    monitor = EventLoopLagMonitor(metrics, interval=0.01)
    await monitor.stop()  # before start: nothing to do
    monitor.start()
    monitor.start()  # idempotent: still one task
    assert sum(t.get_name() == "loop-lag-monitor" for t in asyncio.all_tasks()) == 1
    await wait_for_samples(metrics, 2)
    await monitor.stop()
    assert not monitor.running
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "loop-lag-monitor"]
    await monitor.stop()


async def test_stopping_the_monitor_does_not_swallow_the_callers_cancellation() -> None:
    monitor = EventLoopLagMonitor(Metrics(), interval=10)
    monitor.start()
    stopping = asyncio.Event()

    async def stop() -> str:
        stopping.set()
        await monitor.stop()
        return "stop() swallowed the cancellation"

    caller = asyncio.create_task(stop())
    await stopping.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not monitor.running


# --- the dashboard and the alerts ---------------------------------------------------------------


def exposed_names() -> set[str]:
    metrics = Metrics()
    drive_everything(metrics)
    return {s.name for f in metrics.registry.collect() for s in f.samples}


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[str]:
    board = dashboard()
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_alert_rules_are_the_four_promised() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == {
        "ChanneldChannelDown",
        "ChanneldReconnectStorm",
        "ChanneldReplyFailures",
        "ChanneldEventLoopLag",
    }
    for rule in rules:
        assert rule["expr"].strip()
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_expressions_name_only_exposed_families(source: str) -> None:
    exprs = [r["expr"] for r in alert_rules()] if source == "alerts" else dashboard_exprs()
    used = {name for expr in exprs for name in re.findall(r"channeld_[a-z_]+", expr)}
    assert used
    assert used <= exposed_names(), used - exposed_names()


def test_dashboard_is_an_importable_grafana_model() -> None:
    board = dashboard()
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    assert any(v["name"] == "channel" for v in board["templating"]["list"])
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            labelled_by_channel = re.search(
                r"channeld_(channel|messages|ack|reply|replies|platform)_", target["expr"]
            )
            if labelled_by_channel:
                assert 'channel=~"$channel"' in target["expr"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian: prometheus)")


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def alert(eval_time: str, name: str, *fired: dict[str, str]) -> dict[str, Any]:
    expected = [{"exp_labels": labels} for labels in fired]
    return {"eval_time": eval_time, "alertname": name, "exp_alerts": expected}


@needs_promtool
def test_alerts_fire_when_they_should(tmp_path: Path) -> None:
    """Each alert fires on its symptom and stays quiet beside it (promtool's rule unit tests)."""
    at = "instance='host:8787', job='channeld', platform='dingtalk'"
    series = {
        # down pages; a disabled channel is down on purpose; fine is up.
        f"channeld_channel_up{{{at}, channel='down'}}": "0x10",
        f"channeld_channel_state{{{at}, channel='down', state='disabled'}}": "0x10",
        f"channeld_channel_up{{{at}, channel='off'}}": "0x10",
        f"channeld_channel_state{{{at}, channel='off', state='disabled'}}": "1x10",
        f"channeld_channel_up{{{at}, channel='fine'}}": "1x10",
        f"channeld_channel_state{{{at}, channel='fine', state='disabled'}}": "0x10",
        # flappy reconnects once a minute; steady once in half an hour.
        f"channeld_channel_reconnects_total{{{at}, channel='flappy'}}": "0+1x30",
        f"channeld_channel_reconnects_total{{{at}, channel='steady'}}": "0x15 1x15",
        # busy: 4 of 10 replies a minute fail; quiet: 1 of 2 replies in 10 minutes fails.
        f"channeld_replies_total{{{at}, channel='busy', outcome='replied'}}": "0+6x30",
        f"channeld_replies_total{{{at}, channel='busy', outcome='failed'}}": "0+4x30",
        f"channeld_replies_total{{{at}, channel='quiet', outcome='replied'}}": "0+0.1x30",
        f"channeld_replies_total{{{at}, channel='quiet', outcome='failed'}}": "0+0.1x30",
        # slow: every wake-up is 100-250 ms late; fast: under 5 ms.
        "channeld_event_loop_lag_seconds_bucket{instance='slow', job='channeld', le='0.1'}": "0x30",
        "channeld_event_loop_lag_seconds_bucket{instance='slow', job='channeld', le='0.25'}": (
            "0+4x30"
        ),
        "channeld_event_loop_lag_seconds_bucket{instance='slow', job='channeld', le='+Inf'}": (
            "0+4x30"
        ),
        "channeld_event_loop_lag_seconds_bucket{instance='fast', job='channeld', le='0.005'}": (
            "0+4x30"
        ),
        "channeld_event_loop_lag_seconds_bucket{instance='fast', job='channeld', le='+Inf'}": (
            "0+4x30"
        ),
    }
    labels = {"instance": "host:8787", "job": "channeld", "platform": "dingtalk"}
    checks = [
        alert("4m", "ChanneldChannelDown"),
        alert(
            "8m",
            "ChanneldChannelDown",
            {**labels, "severity": "critical", "channel": "down"},
        ),
        alert(
            "25m",
            "ChanneldReconnectStorm",
            {**labels, "severity": "warning", "channel": "flappy"},
        ),
        alert(
            "25m",
            "ChanneldReplyFailures",
            {"platform": "dingtalk", "severity": "critical", "channel": "busy"},
        ),
        alert(
            "25m",
            "ChanneldEventLoopLag",
            {"instance": "slow", "job": "channeld", "severity": "warning"},
        ),
    ]
    # promtool compares annotations whole; the firing logic is what is under test here.
    document = yaml.safe_load(ALERTS.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(document))
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": k, "values": v} for k, v in series.items()],
                "alert_rule_test": checks,
            }
        ],
    }
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(test))
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, textwrap.indent(result.stdout + result.stderr, "  ")
