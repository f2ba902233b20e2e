"""The progress display: a redrawn status line on a terminal, plain log lines otherwise."""

import io

from pipealgos.platform.runner.progress import ChannelProgress, Display, summary


def test_terminal_display_redraws_one_status_line_under_the_log():
    out = io.StringIO()
    display = Display(out, mode="tty")
    channel = ChannelProgress("train", "Pipe", bytes=5_000_000, objects=2, planned_objects=4, active_s=2.0)
    display.update([channel])
    display.host_line("algo-1", "hello")
    display.close()
    text = out.getvalue()
    assert "train (Pipe): 5.0 MB, 2.5 MB/s, 2 objects delivered (4 per pass over all hosts)" in text
    assert "\r\x1b[2K[algo-1] hello\n" in text and text.endswith("\n")


def test_plain_display_prints_status_lines_at_its_interval():
    out = io.StringIO()
    display = Display(out, mode="plain", interval=3600)
    channel = ChannelProgress("train", "File", bytes=1_000_000, objects=1, planned_objects=1, active_s=0.5)
    display.update([channel])  # within the interval: nothing
    display.host_line("algo-2", "line")
    display.update([channel], force=True)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[algo-2] line"
    assert lines[1].startswith("[runner] ") and lines[1].endswith("train (File): 1.0 MB, 2.0 MB/s, 1 objects delivered (1 per pass over all hosts)")
    assert "\x1b" not in out.getvalue()


def test_summary_totals():
    channels = [ChannelProgress("train", "Pipe", bytes=10, first_byte_s=0.5, first_byte_after_open_s=0.01, active_s=1),
                ChannelProgress("test", "File", bytes=5, first_byte_s=0.2, active_s=1)]
    body = summary("j", "Completed", "Completed", None, None, {"algo-1": 0}, channels, 3.0, 123, {})
    assert body["TimeToFirstByteSeconds"] == 0.2 and body["BytesRead"] == 15 and body["PeakLocalDiskBytes"] == 123
    assert body["Channels"]["train"]["FirstByteAfterOpenSeconds"] == 0.01
