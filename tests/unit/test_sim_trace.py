"""Trace formats are detected from the content and loaded in order, relative to the first request."""

import json

import pytest

from llmd_operator.sim.trace import TraceError, detect_format, load_trace, windows


def azure(tmp_path, name="a.txt"):
    p = tmp_path / name
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:15:46.6805900,374,44\n"
                 "2023-11-16 18:15:47.1805900,100,0\n"
                 "2023-11-16 18:15:46.1805900,10,5\n")
    return p


def mooncake(tmp_path, name="m.data"):
    p = tmp_path / name
    p.write_text("\n".join(json.dumps({"timestamp": t, "input_length": i, "output_length": o, "hash_ids": [1]})
                           for t, i, o in ((0, 40160, 6), (2000, 100, 50), (1000, 300, 20))) + "\n")
    return p


def test_azure_csv_detected_and_sorted_whatever_the_file_name(tmp_path):
    p = azure(tmp_path)
    assert detect_format(p) == "azure"
    tr = load_trace(p)
    assert tr.format == "azure" and len(tr.requests) == 3
    assert [r.arrival_s for r in tr.requests] == pytest.approx([0.0, 0.5, 1.0])
    assert tr.requests[1].input_tokens == 374
    assert tr.requests[2].output_tokens == 1       # zero generated tokens still produce one


def test_mooncake_jsonl_detected_with_ms_timestamps(tmp_path):
    p = mooncake(tmp_path)
    assert detect_format(p) == "mooncake"
    tr = load_trace(p)
    assert [r.arrival_s for r in tr.requests] == [0.0, 1.0, 2.0]
    assert tr.requests[0].input_tokens == 40160


def test_azure_2024_timestamps_with_a_utc_offset(tmp_path):
    p = tmp_path / "AzureLLMInferenceTrace_code_1week.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2024-05-10 00:00:00.0098380+00:00,4808,10\n"
                 "2024-05-10 00:00:02+00:00,3180,8\n")
    tr = load_trace(p)
    assert tr.format == "azure"
    assert [r.arrival_s for r in tr.requests] == pytest.approx([0.0, 1.990162])


def test_burstgpt_csv_in_seconds_with_failed_requests(tmp_path):
    p = tmp_path / "BurstGPT_1.csv"
    p.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                 "5,ChatGPT,472,18,490,Conversation log\n"
                 "45,ChatGPT,1087,0,1087,Conversation log\n"
                 "118,GPT-4,417,276,693,API log\n")
    assert detect_format(p) == "burstgpt"
    tr = load_trace(p)
    assert [r.arrival_s for r in tr.requests] == [0.0, 40.0, 113.0]
    assert [r.input_tokens for r in tr.requests] == [472, 1087, 417]
    assert tr.requests[1].output_tokens == 1       # a failed request still costs its prefill


def test_unknown_format_is_refused(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(TraceError, match="unknown trace format"):
        load_trace(p)


def test_rate_multiplier_compresses_time(tmp_path):
    tr = load_trace(mooncake(tmp_path), rate_multiplier=4)
    assert [r.arrival_s for r in tr.requests] == [0.0, 0.25, 0.5]
    assert tr.rate_multiplier == 4 and tr.rate_mode == "compress"


def test_overlay_keeps_duration_and_multiplies_requests(tmp_path):
    base = load_trace(mooncake(tmp_path))
    tr = load_trace(mooncake(tmp_path), rate_multiplier=2.5, rate_mode="overlay")
    assert len(tr.requests) == 8                  # 3 + 3 + half of 3 (every other request: 2)
    assert max(r.arrival_s for r in tr.requests) <= base.duration_s + 1e-6
    assert tr.rate_mode == "overlay"


def hourly(tmp_path, minutes, name="long.jsonl"):
    """A Mooncake-format trace with one request at each of these minutes, in this file order."""
    p = tmp_path / name
    p.write_text("".join(json.dumps({"timestamp": m * 60_000, "input_length": 100 + m, "output_length": 10,
                                     "hash_ids": [1]}) + "\n" for m in minutes))
    return p


def test_a_window_replays_only_its_part_of_a_long_trace(tmp_path):
    tr = load_trace(hourly(tmp_path, range(0, 600, 5)), start_s=3600, duration_s=3600)
    # minutes 60..115 (the hour from the first request's 60th minute), on a clock starting at the window
    assert [r.input_tokens - 100 for r in tr.requests] == list(range(60, 120, 5))
    assert tr.requests[0].arrival_s == 0.0 and tr.duration_s == 55 * 60
    assert tr.start_s == 3600 and tr.span_s == 595 * 60


def test_a_window_counts_from_the_earliest_request_even_out_of_file_order(tmp_path):
    tr = load_trace(hourly(tmp_path, [10, 0, 70, 30, 65, 5]), start_s=0, duration_s=3600)
    assert [r.input_tokens - 100 for r in tr.requests] == [0, 5, 10, 30]


def test_a_window_then_takes_the_rate_multiplier(tmp_path):
    tr = load_trace(hourly(tmp_path, range(0, 600, 5)), rate_multiplier=4, start_s=3600, duration_s=3600)
    assert tr.duration_s == 55 * 60 / 4 and len(tr.requests) == 12


def test_a_window_past_the_end_or_of_no_length_is_refused(tmp_path):
    p = hourly(tmp_path, range(0, 120, 5))
    with pytest.raises(TraceError, match=r"no requests between 7200 s and 10800 s \(the trace spans 6900 s\)"):
        load_trace(p, start_s=7200, duration_s=3600)
    with pytest.raises(TraceError, match=r"--start, --duration"):
        load_trace(p, duration_s=0)
    with pytest.raises(TraceError, match=r"got start -60 s\)"):
        load_trace(p, start_s=-60)


def test_windows(tmp_path):
    w = windows(load_trace(mooncake(tmp_path)), 1.5)
    assert [c for _, c, _, _, _ in w] == [2, 1]
    assert w[0][2] == pytest.approx((40160 + 300) / 2)
    # the 40k-token prompt answers in 6 tokens, so it spends few steps in the decode batch: the
    # batch's mean context, weighted by answer tokens, is under half of mean input + output / 2
    batch_context = (6 * (40160 + 3) + 20 * (300 + 10)) / 26
    assert w[0][4] == pytest.approx(batch_context / ((40160 + 300) / 2 + 13 / 2))
    assert w[1][4] == pytest.approx(1.0)          # one request: its own context


def test_shared_traces_load_if_present():
    from pathlib import Path
    d = Path(__file__).resolve().parents[3] / "shared" / "data" / "traces"
    if not d.exists():
        pytest.skip("shared traces not present")
    for f in d.iterdir():
        if f.suffix in (".csv", ".jsonl"):
            tr = load_trace(f)
            assert len(tr.requests) > 1000 and tr.duration_s > 600
