"""`python -m producer ctl`: send one control request to a running producer, return its answer
(the requests themselves live in common.control, which the broadcaster uses too)."""

from __future__ import annotations

from common.control import ask, ask_all

__all__ = ["ask", "ask_all"]
