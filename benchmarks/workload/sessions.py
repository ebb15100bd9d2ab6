"""Multi-turn sessions shaped like Chutes production traffic: plans, prompt text, arrivals, the client loop.

Pure (no I/O, no clock); every draw comes from an injected ``random.Random``, so the same seed
gives the same sessions. Profiles and their sources: :mod:`benchmarks.workload.profiles` (figures of
Nixon et al., PVLDB 2027, data ``HarvardMadSys/chutes_workload`` under CC BY 4.0).

A :class:`Session` is a plan: per turn its prompt tokens, the tokens of its new message, the output
tokens to ask for (``max_tokens``) and the think time before it. The prompt of turn k is the whole
conversation so far: the first messages, then for each earlier turn its answer and the next new
message, so every prompt of a session is a prefix of the next one, as a client that resends its
history produces (what prefix caches and prefix hashing see in production). Tokens are counted
as in the simulator (``chutes_lb.simulator.prompt``): UTF-8 bytes / 4; the text here is ASCII, so
a message of n tokens has 4 x n characters (the simulator adds a few bytes per message for the
role and separators).

Load: :func:`session_rate` turns a load (fraction of the fleet's capacity) into new sessions per
second; :meth:`SessionWorkload.arrivals` draws Poisson arrival times. The client loop is closed
per session (:class:`ClientLoop`): turn k+1 is sent only after turn k's answer arrived, plus
turn k+1's think time, unless turn k+1 is a concurrent sub-request (``Turn.concurrent``: an agent's
parallel call), which is sent its ``think`` after turn k was *sent* and resends turn k's prompt
without its answer. Half the sessions open with one of a pool of common system prompts, so their
first tokens are shared *across* sessions (``Session.shared_seed`` / ``shared_tokens``).
:func:`replay` runs that loop against a response-time model and yields ``(time, session, turn)``
events in time order.
"""
from __future__ import annotations

import bisect
import dataclasses
import heapq
import math
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from benchmarks.workload.profiles import Profile, profile

__all__ = ["Turn", "Session", "SessionWorkload", "ClientLoop", "replay", "session_rate", "make_text"]

MIN_FIRST_TOKENS = 16  # room for the system message's session header at any token_scale
MAX_REDRAWS = 8  # new messages drawn for a turn before the last is cut to what the context window holds
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "to", "sa", "vi", "de", "po", "ga", "fu", "zi", "be", "ho", "ya")
_WORDS = tuple(a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in ("", "n", "r", "s"))  # 1,024 words


def make_text(seed: str, chars: int, head: str = "") -> str:
    """``chars`` ASCII characters: ``head`` then pseudo-words drawn from a generator seeded by ``seed``
    (a string seeds ``random.Random`` the same way in every process)."""
    if chars <= 0:
        return ""
    rng = random.Random(seed)
    words = rng.choices(_WORDS, k=chars // 4 + 2)  # mean word + space ~ 5.1 chars
    text = head + " ".join(words)
    while len(text) < chars:
        text += " " + " ".join(rng.choices(_WORDS, k=chars // 4 + 2))
    return text[:chars]


@dataclass(frozen=True, slots=True)
class Turn:
    index: int
    prompt_tokens: int  # the whole conversation sent with this turn
    new_tokens: int  # tokens of this turn's new messages (turn 0: the first prompt)
    output_tokens: int  # tokens to ask for (max_tokens); the planned answer length
    think: float  # seconds between the previous answer and this turn (0 for turn 0); concurrent: after its start
    concurrent: bool = False  # a parallel sub-request: ``think`` s after turn index-1 was *sent*, without its answer


@dataclass(frozen=True)
class Session:
    """One planned session. ``key`` is stable and safe to send as ``user`` / ``prompt_cache_key``."""

    index: int
    key: str
    start: float  # arrival time of turn 0 (seconds; 0 until the arrival process sets it)
    turns: tuple[Turn, ...]
    text_seed: str
    system_share: float = 0.8  # share of the first prompt sent as the system message
    shared_seed: str = ""  # the common system prompt this session starts with ("" = none)
    shared_tokens: int = 0  # how many of its tokens open this session's system message

    @property
    def followups(self) -> int:
        return len(self.turns) - 1

    def new_message(self, k: int) -> str:
        """The text of turn k's new user message (turn 0: the first user message)."""
        t = self.turns[k]
        if k == 0:
            return make_text(f"{self.text_seed}:u0", t.new_tokens * 4 - self._system_chars())
        return make_text(f"{self.text_seed}:u{k}", t.new_tokens * 4)

    def system_prompt(self) -> str:
        """The session's system message: the common prompt's first ``shared_tokens`` tokens if any
        (sessions drawing the same one share that prefix, as production's common system prompts
        do), then the key (so nothing after it is shared) and text of the session's own."""
        shared = make_text(self.shared_seed, self.shared_tokens * 4) if self.shared_tokens else ""
        own = self._system_chars() - len(shared)
        return shared + make_text(f"{self.text_seed}:sys", own, head=f"[session {self.key}] ")

    def answer(self, k: int) -> str:
        """A stand-in for turn k's answer of the planned length, when the real answer is not at hand."""
        return make_text(f"{self.text_seed}:a{k}", self.turns[k].output_tokens * 4)

    def _system_chars(self) -> int:
        return max(len(self.key) + 12, int(self.turns[0].new_tokens * 4 * self.system_share))

    def messages(self, k: int, answers: Iterable[str] | None = None) -> list[dict[str, str]]:
        """OpenAI chat messages of turn k: the history with ``answers`` (the real answers of turns
        0..k-1, as a client resends them) or the planned stand-ins, then turn k's new message."""
        need = [j - 1 for j in range(1, k + 1) if not self.turns[j].concurrent]  # answers in the history
        got = list(answers) if answers is not None else [self.answer(j) for j in range(k)]
        if need and len(got) <= need[-1]:
            raise ValueError(f"turn {k} needs the answers of turns {need}, got {len(got)} answers")
        out = [{"role": "system", "content": self.system_prompt()}, {"role": "user", "content": self.new_message(0)}]
        for j in range(1, k + 1):
            if not self.turns[j].concurrent:  # a sub-request was sent before its parent's answer
                out.append({"role": "assistant", "content": got[j - 1]})
            out.append({"role": "user", "content": self.new_message(j)})
        return out


@dataclass(frozen=True)
class SessionWorkload:
    """Draws sessions from a profile. Scales: ``token_scale`` multiplies prompt sizes (first prompt
    and new messages; e.g. 0.01 for fast tests, 1.0 for the published 10k-100k-token prompts),
    ``output_scale`` the output tokens, ``think_scale`` the think times."""

    profile: Profile
    token_scale: float = 1.0
    output_scale: float = 1.0
    think_scale: float = 1.0
    key_prefix: str = "sess"

    @classmethod
    def named(cls, name: str, **kw) -> "SessionWorkload":
        return cls(profile(name), **kw)

    def followups(self, rng: random.Random) -> int:
        s, u = self.profile.survival, rng.random()
        lo, hi = 0, len(s) - 1  # largest k with s[k] > u (s[0] = 1 > u)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if s[mid] > u:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def session(self, rng: random.Random, index: int, start: float = 0.0) -> Session:
        """Session ``index``: the follow-up count, the key, the common prompt, the first prompt, then
        per turn the output, whether the next turn is a concurrent sub-request, its new tokens and
        think time (a fixed order of draws: same rng state, same plan)."""
        p, ts, os_ = self.profile, self.token_scale, self.output_scale
        f = self.followups(rng)
        key_bits = rng.getrandbits(64)
        shared = -1
        if rng.random() < p.shared_share:
            shared = bisect.bisect_left(p.shared_cdf, rng.random() * p.shared_cdf[-1])
        first = max(MIN_FIRST_TOKENS, round(p.first(f).sample(rng) * ts))
        user = p.user_at(f)
        cap = p.max_prompt_tokens * ts
        turns = []
        prompt, new, think, concurrent = first, first, 0.0, False
        for k in range(f + 1):
            out = max(1, round(p.output.sample(rng) * os_))
            turns.append(Turn(k, prompt, new, out, think, concurrent))
            if k == f:
                break
            concurrent = rng.random() < p.concurrent_share
            think = (p.concurrent_gap if concurrent else p.think).sample(rng) * self.think_scale
            room = cap - prompt - (0 if concurrent else out)
            if room < 1:  # the context window is full: the session ends here
                break
            new = max(1, round(user.sample(rng) * ts))
            for _ in range(MAX_REDRAWS):  # a message that would overflow the window is drawn again
                if new <= room:
                    break
                new = max(1, round(user.sample(rng) * ts))
            new = min(new, int(room))
            prompt += (0 if concurrent else out) + new
        s = Session(index, f"{self.key_prefix}-{key_bits:016x}", start, tuple(turns), f"{key_bits:016x}")
        if shared >= 0:  # at most the system message's share of the first prompt, less the key's header
            room = int(first * s.system_share) - (len(s.key) + 12 + 3) // 4
            size = min(round(p.shared_sizes[shared] * ts), room)
            if size > 0:
                s = dataclasses.replace(s, shared_seed=f"{p.name}:shared:{shared}", shared_tokens=size)
        return s

    def sessions(self, rng: random.Random, rate: float, n: int | None = None, start: float = 0.0) -> Iterator[Session]:
        """Sessions with Poisson arrivals at ``rate`` per second (``n`` of them, or without end)."""
        t, i = start, 0
        while n is None or i < n:
            t += rng.expovariate(rate)
            yield self.session(rng, i, t)
            i += 1

    @property
    def mean_turns(self) -> float:
        return self.profile.mean_turns


def session_rate(load: float, slots: float, mean_service_s: float, mean_turns: float) -> float:
    """New sessions per second that keep ``load`` x ``slots`` busy when a turn holds a slot
    ``mean_service_s`` on average."""
    if not (load > 0 and slots > 0 and mean_service_s > 0 and mean_turns > 0):
        raise ValueError("load, slots, mean_service_s and mean_turns must be positive")
    return load * slots / mean_service_s / mean_turns


class ClientLoop:
    """The clients' side, closed per session: a turn is due at its session's arrival (turn 0) or at
    the previous answer's arrival plus its think time. Push sessions (in any order), pop due turns
    in time order, report answers with :meth:`answered`."""

    def __init__(self, sessions: Iterable[Session] = ()) -> None:
        self._heap: list[tuple[float, int, int, Session]] = []
        self._seq = 0
        for s in sessions:
            self.add(s)

    def add(self, s: Session) -> None:
        self._push(s.start, s, 0)

    def _push(self, t: float, s: Session, k: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, k, s))

    def next_time(self) -> float:
        return self._heap[0][0] if self._heap else math.inf

    def pop(self) -> tuple[float, Session, Turn]:
        """The next due turn; if the turn after it is a concurrent sub-request, that one is due
        its ``think`` after this one's send, without waiting for the answer."""
        t, _, k, s = heapq.heappop(self._heap)
        if k + 1 < len(s.turns) and s.turns[k + 1].concurrent:
            self._push(t + s.turns[k + 1].think, s, k + 1)
        return t, s, s.turns[k]

    def answered(self, s: Session, k: int, at: float) -> float | None:
        """Turn k's answer arrived at ``at``: schedule turn k+1; returns its time, None at the end
        or when turn k+1 is a concurrent sub-request (already scheduled when turn k was sent)."""
        if k + 1 >= len(s.turns) or s.turns[k + 1].concurrent:
            return None
        t = at + s.turns[k + 1].think
        self._push(t, s, k + 1)
        return t

    def __len__(self) -> int:
        return len(self._heap)


def replay(sessions: Iterable[Session], response_time: Callable[[Session, Turn], float] = lambda s, t: 0.0
           ) -> Iterator[tuple[float, Session, Turn]]:
    """``(send time, session, turn)`` in time order, each answer taking ``response_time`` seconds."""
    loop, src = ClientLoop(), iter(sessions)
    nxt = next(src, None)
    while nxt is not None or len(loop):
        if nxt is not None and nxt.start <= loop.next_time():
            loop.add(nxt)
            nxt = next(src, None)
            continue
        t, s, turn = loop.pop()
        yield t, s, turn
        loop.answered(s, turn.index, t + response_time(s, turn))
