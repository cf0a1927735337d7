"""The demo's time compression: the example's time settings divided by the compression, never below the floors."""

import argparse
import math

import pytest

from tokenfactory import api, demo


@pytest.fixture(scope="module")
def spec():
    return demo.example_manifest()["spec"]


def test_a_day_in_ten_minutes_scales_start_up_and_stabilization_exactly(spec):
    c = demo.compression_for(spec, 86400 / 600)
    assert c.factor == pytest.approx(144.0)
    # the example's full-speed settings: 30 s interval, 5 m stabilization, 2 m window, the sheet's 300 s start-ups
    assert c.full == {"interval": 30.0, "scaleDownStabilization": 300.0, "window": 120.0,
                      "startupSeconds.gb300": 300.0, "startupSeconds.h200": 300.0}
    assert c.scaled["startupSeconds.gb300"] == pytest.approx(300 / 144)
    assert c.scaled["scaleDownStabilization"] == pytest.approx(300 / 144)
    assert c.startup_seconds == pytest.approx(300 / 144)
    # 30 s / 144 and 2 m / 144 are faster than the live operator and Prometheus go: held at the floors, and said
    assert c.scaled["interval"] == demo.FLOORS["interval"] and c.scaled["window"] == demo.FLOORS["window"]
    assert set(c.floored) == {"interval", "window"}
    text = c.describe()
    assert "time compressed 144x" in text and "scaling.interval 30s -> 1s (floor)" in text
    assert "gb300 start-up 300s -> 2.08s" in text and "harsher" in text


def test_a_mild_compression_scales_every_setting(spec):
    c = demo.compression_for(spec, 20.0)
    assert c.floored == ()
    for key, full in c.full.items():
        assert c.scaled[key] == pytest.approx(full / 20.0), key
    assert "floor" not in c.describe()


def test_the_manifest_carries_the_scaled_settings_and_validates(spec):
    c = demo.compression_for(spec, 86400 / 600)
    doc = demo.demo_manifest("demo-x", c)
    api.parse_object(doc)  # the CRD's rules accept it
    s = doc["spec"]
    assert doc["metadata"]["namespace"] == "demo-x"
    assert api.parse_duration(s["scaling"]["interval"]) == pytest.approx(c.scaled["interval"])
    assert api.parse_duration(s["scaling"]["scaleDownStabilization"]) == pytest.approx(
        c.scaled["scaleDownStabilization"], abs=0.005)
    assert api.parse_duration(s["metrics"]["window"]) == pytest.approx(c.scaled["window"])
    assert {p["name"]: p["startupSeconds"] for p in s["pools"]} == pytest.approx(
        {"gb300": 300 / 144, "h200": 300 / 144}, abs=1e-3)
    # everything else is the example's
    assert s["scaling"].get("headroom") == spec["scaling"].get("headroom")  # none in the example (SLO planning)
    assert s["objectives"] == spec["objectives"]


@pytest.mark.parametrize("seconds", [0.0004, 0.35, 1.0, 2.0833, 12.5, 90.0])
def test_duration_text_round_trips_within_a_millisecond(seconds):
    text = demo._duration_text(seconds)
    assert api.parse_duration(text) == pytest.approx(max(seconds, 0.001), abs=0.005)


def test_a_compression_below_one_is_refused(spec, capsys):
    with pytest.raises(demo.DemoError, match="--compression"):
        demo.compression_for(spec, 0.5)
    args = argparse.Namespace(duration=600.0, compression=0.5)
    assert demo.run(args) == 2
    assert "--compression must be a number >= 1" in capsys.readouterr().err
    args = argparse.Namespace(duration=600.0, compression=math.nan)
    assert demo.run(args) == 2
