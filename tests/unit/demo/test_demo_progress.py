"""The live line: redrawn by rich on a terminal, plain throttled lines elsewhere."""

from __future__ import annotations

import io

from flywheel.demo.progress import ProgressLine


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_lines_are_plain_and_throttled_and_every_note_is_written():
    stream = io.StringIO()
    line = ProgressLine(stream, every_s=3600)
    line.update("t=   1.0s  accuracy 0.900")
    line.update("t=   1.5s  accuracy 0.910")  # within every_s of the first: not written
    line.note("t=   2.0s  churn v3 refused (run r1: [drift])")
    line.close()
    assert stream.getvalue() == (
        "t=   1.0s  accuracy 0.900\nt=   2.0s  churn v3 refused (run r1: [drift])\n")
    assert not line.live


def test_off_a_terminal_every_update_is_written_when_there_is_no_throttle():
    stream = io.StringIO()
    line = ProgressLine(stream, every_s=0)
    line.update("one")
    line.update("two")
    assert stream.getvalue() == "one\ntwo\n"


def test_on_a_terminal_the_line_is_redrawn_with_notes_above_it_and_closed_once():
    stream = Terminal()
    line = ProgressLine(stream)
    assert line.live
    line.update("t=   1.0s  accuracy 0.900")
    line.note("the hidden concept drifts [now]")
    line.update("t=   2.0s  accuracy 0.700")
    line.close()
    line.close()  # the demo closes on its way out as well
    written = stream.getvalue()
    assert "\r" in written  # redrawn in place, not appended
    assert "the hidden concept drifts [now]\n" in written
    last = written.rsplit("\r", 1)[-1]
    assert "t=   2.0s  accuracy 0.700" in last and "t=   1.0s" not in last
