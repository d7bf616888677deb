"""Parsing generated turns back into canonical fields, leniently: never raises.

The markers come from the run's prompt template (the literal text around `{decision}`, `{name}`,
`{arguments}` in the turn bodies, and the decision words), so a custom template parses with its own
markers. With recipes/template/glpft.yaml:

- planner:    " {thought}\\nNext: {decision}."  ->  thought + decision (call / conclusion / give_up).
              The last "Next: <word>" wins; whitespace, case, a missing final "." and the canonical
              spellings (call, give_up) are tolerated. Without the marker, a last line that is just a
              decision word ("caller.") still counts. Otherwise decision None.
- caller:     " Action: {name}\\nAction Input: {arguments}"  ->  name + arguments text. No
              "Action:" (and no bare name line before "Action Input:") means name None. Missing
              input means "{}"; text after a complete JSON value is cut off.
- summarizer: the answer, stripped.
- merged:     a template's `step_targets` (one output = thought + call / conclusion / give up, as
              the α-UMi single-LLM backbone produces) -> the planner decision plus the call or answer.
"""
from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass

from prompting.prompt_template import PromptTemplate

_IDENT = re.compile(r"^[\w.\-/:]+$")


@dataclass
class PlannerOutput:
    thought: str
    decision: str | None      # call / conclusion / give_up, None when unparseable
    raw: str


@dataclass
class CallerOutput:
    name: str | None          # None when unparseable
    arguments: str | None     # JSON text as written (trimmed); None when name is None
    raw: str


@dataclass
class MergedOutput:
    planner: PlannerOutput
    call: CallerOutput | None = None   # set when the decision is call
    answer: str | None = None          # set when the decision is conclusion


def _fields(fmt: str) -> list[tuple[str, str | None]]:
    """(literal before, field) pairs of a format string; the last pair may have field None."""
    return [(lit, field) for lit, field, _s, _c in string.Formatter().parse(fmt)]


def _literal_before(fmt: str, field: str) -> str | None:
    for lit, f in _fields(fmt):
        if f == field:
            return lit
    return None


def _literal_after(fmt: str, field: str) -> str:
    parts = _fields(fmt)
    for i, (_lit, f) in enumerate(parts):
        if f == field and i + 1 < len(parts):
            return parts[i + 1][0]
    return ""


def _flex(literal: str) -> str:
    """A regex for a marker literal that tolerates any whitespace run and letter case."""
    words = literal.split()
    return r"\s*".join(re.escape(w) for w in words) if words else ""


def _norm_word(word: str) -> str:
    return re.sub(r"[\s_]+", " ", word.strip().lower()).strip(" .")


class OutputParser:
    """Parses generated turn bodies with the markers of one template."""

    def __init__(self, template: PromptTemplate):
        turns, words = template.turns, template.decision_words
        self.step_targets = template.step_targets
        # planner
        pbody = turns["planner"]["body"]
        self.thought_prefix = (_literal_before(pbody, "thought") or "").strip()
        marker = (_literal_before(pbody, "decision") or "").strip() or "Next:"
        closing = _literal_after(pbody, "decision").strip()
        self.word_of = {}  # normalized spelling -> decision
        for decision, word in words.items():
            self.word_of[_norm_word(word)] = decision
            self.word_of.setdefault(_norm_word(decision), decision)
        alts = "|".join(r"\s*".join(re.escape(p) for p in re.split(r"[\s_]+", w))
                        + (r"|" + re.escape(w.replace(" ", "_")) if " " in w else "")
                        for w in sorted(self.word_of, key=len, reverse=True))
        self.decision_re = re.compile(r"\s*" + _flex(marker) + r"[ \t]*(?P<word>" + alts + r")\b"
                                      + (r"\s*" + re.escape(closing) + "?" if closing else ""),
                                      re.IGNORECASE)
        self.marker_re = re.compile(r"\s*" + _flex(marker), re.IGNORECASE)
        self.bare_word_re = re.compile(r"^\s*(?P<word>" + alts + r")\s*[.!]?\s*$", re.IGNORECASE)
        # caller
        self.call_markers = self._call_markers(turns["caller"]["body"])
        self.answer_fmt = turns["summarizer"]["body"]

    @staticmethod
    def _call_markers(fmt: str) -> tuple[str, str]:
        name = (_literal_before(fmt, "name") or "").strip() or "Action:"
        args = (_literal_before(fmt, "arguments") or "").strip() or "Action Input:"
        return name, args

    # ----- single turns ---------------------------------------------------------------------
    def parse_planner(self, text: str | None) -> PlannerOutput:
        raw = text or ""
        matches = list(self.decision_re.finditer(raw))
        if matches:
            m = matches[-1]
            word = _norm_word(m.group("word"))
            return PlannerOutput(self._thought(raw[:m.start()]), self.word_of.get(word), raw)
        m = self.marker_re.search(raw)
        if m:  # a marker with no known decision word after it
            return PlannerOutput(self._thought(raw[:m.start()]), None, raw)
        lines = raw.rstrip().split("\n")
        m = self.bare_word_re.match(lines[-1]) if lines else None
        if m:
            return PlannerOutput(self._thought("\n".join(lines[:-1])),
                                 self.word_of.get(_norm_word(m.group("word"))), raw)
        return PlannerOutput(self._thought(raw), None, raw)

    def _thought(self, text: str) -> str:
        text = text.strip()
        if self.thought_prefix and text.startswith(self.thought_prefix):
            text = text[len(self.thought_prefix):].lstrip()
        return text

    def parse_caller(self, text: str | None, markers: tuple[str, str] | None = None) -> CallerOutput:
        raw = text or ""
        name_marker, args_marker = markers or self.call_markers
        args_m = re.search(_flex(args_marker), raw, re.IGNORECASE)
        # the name marker must not be the start of the arguments marker ("Action:" vs "Action Input:")
        name_m = None
        for m in re.finditer(_flex(name_marker), raw, re.IGNORECASE):
            if not (args_m and m.start() == args_m.start() and args_marker.startswith(name_marker)
                    and len(name_marker) < len(args_marker)):
                name_m = m
                break
        if name_m is not None:
            end = args_m.start() if args_m and args_m.start() > name_m.end() else len(raw)
            name_text = raw[name_m.end():end].strip()
            name = name_text.split("\n", 1)[0].strip().strip("`'\"").strip() if name_text else ""
        elif args_m is not None:  # "NAME\nAction Input: ..." without the name marker
            before = raw[:args_m.start()].strip().split("\n")
            name = before[-1].strip().strip("`'\"") if before and _IDENT.match(before[-1].strip()
                                                                             .strip("`'\"")) else ""
        else:
            name = ""
        if not name:
            return CallerOutput(None, None, raw)
        arguments = raw[args_m.end():] if args_m and args_m.start() >= (name_m.end() if name_m else 0) else ""
        return CallerOutput(name, _trim_arguments(arguments), raw)

    def parse_summarizer(self, text: str | None) -> str:
        raw = (text or "").strip()
        before = (_literal_before(self.answer_fmt, "answer") or "").strip()
        if before and raw.startswith(before):
            raw = raw[len(before):].strip()
        return raw

    # ----- merged (step_targets) outputs -----------------------------------------------------
    def parse_merged(self, text: str | None, role: str = "backbone") -> MergedOutput:
        """An output of a role whose template has `step_targets` (thought + call or conclusion)."""
        raw = text or ""
        fmts = self.step_targets[role]
        call_fmt, concl_fmt, give_fmt = fmts["call"], fmts["conclusion"], fmts["give_up"]
        call_markers = self._call_markers(call_fmt)
        concl_marker = (_literal_before(concl_fmt, "answer") or "").strip() or "conclusion:"
        give_literal = (_literal_after(give_fmt, "thought") or "").strip() or "conclusion: give up."
        give_re = re.compile(r"\s*" + _flex(give_literal.rstrip(".")) + r"\.?", re.IGNORECASE)
        concl_re = re.compile(r"\s*" + _flex(concl_marker), re.IGNORECASE)
        call_re = re.compile(r"\s*" + _flex(call_markers[0]) + r"(?!\s*Input)", re.IGNORECASE)
        found = []
        for decision, rx in (("give_up", give_re), ("conclusion", concl_re), ("call", call_re)):
            m = rx.search(raw)
            if m:
                found.append((m.start(), ("give_up", "conclusion", "call").index(decision), decision, m))
        if not found:
            planner = self.parse_planner(raw)  # perhaps the planner-turn form
            return MergedOutput(planner)
        _pos, _rank, decision, m = min(found)
        planner = PlannerOutput(self._thought(raw[:m.start()]), decision, raw)
        if decision == "call":
            return MergedOutput(planner, call=self.parse_caller(raw[m.start():], call_markers))
        if decision == "conclusion":
            return MergedOutput(planner, answer=raw[m.end():].strip())
        return MergedOutput(planner)


def _trim_arguments(text: str) -> str:
    """Stripped argument text; '{}' when empty; cut after a complete leading JSON value."""
    text = text.strip()
    if not text:
        return "{}"
    try:
        json.loads(text)
        return text
    except ValueError:
        pass
    try:
        _value, end = json.JSONDecoder().raw_decode(text)
        return text[:end]
    except ValueError:
        return text

