"""Word timings in one shape: from character alignments, from Whisper segments, and as SRT."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reelflow import media
from reelflow.providers.transcripts import (
    clean_words,
    srt_from_words,
    transcript_fields,
    words_from_characters,
    words_from_segments,
    write_srt,
)


def align(text: str, step: float = 0.1) -> tuple[list[str], list[float], list[float]]:
    """Characters of `text`, each `step` seconds long, back to back."""
    chars = list(text)
    starts = [round(i * step, 3) for i in range(len(chars))]
    ends = [round((i + 1) * step, 3) for i in range(len(chars))]
    return chars, starts, ends


def test_words_from_characters_split_on_spaces_and_keep_punctuation() -> None:
    words = words_from_characters(*align("Hi, you there."))
    assert words == [
        {"word": "Hi,", "start": 0.0, "end": 0.3},
        {"word": "you", "start": 0.4, "end": 0.7},
        {"word": "there.", "start": 0.8, "end": 1.4},
    ]


def test_words_from_characters_ignore_runs_of_whitespace_and_keep_the_trailing_word() -> None:
    words = words_from_characters(*align("  one   two\n\tthree"))
    assert [w["word"] for w in words] == ["one", "two", "three"]
    assert words[0] == {"word": "one", "start": 0.2, "end": 0.5}
    assert words[1] == {"word": "two", "start": 0.8, "end": 1.1}
    assert words[2] == {"word": "three", "start": 1.3, "end": 1.8}  # the last word, with no space after it
    assert words_from_characters(*align("   ")) == []
    assert words_from_characters([], [], []) == []


def test_words_from_characters_use_the_shortest_of_uneven_lists() -> None:
    chars, starts, ends = align("ab cd")
    words = words_from_characters(chars, starts, ends[:4])  # the last character has no end: dropped
    assert words == [{"word": "ab", "start": 0.0, "end": 0.2}, {"word": "c", "start": 0.3, "end": 0.4}]


def test_clean_words_sort_round_clamp_and_drop_bad_entries() -> None:
    given_words: list[Any] = [
        {"word": " later ", "start": 2.0, "end": 2.5},
        {"text": "first", "start": 0.12345, "end": 0.5},  # Whisper names it `text`
        {"word": "backwards", "start": 1.0, "end": 0.5},  # end before start: clamped
        {"word": "", "start": 3.0, "end": 3.1},
        {"word": "   ", "start": 3.0, "end": 3.1},
        {"word": "no-end", "start": 3.0},
        {"word": "text-time", "start": "3.0", "end": 3.5},
        {"word": "bool-time", "start": True, "end": 3.5},
        {"word": "negative", "start": -1.0, "end": 0.2},
        "not an object",
        None,
    ]
    assert clean_words(given_words) == [
        {"word": "negative", "start": 0.0, "end": 0.2},
        {"word": "first", "start": 0.123, "end": 0.5},
        {"word": "backwards", "start": 1.0, "end": 1.0},
        {"word": "later", "start": 2.0, "end": 2.5},
    ]


def test_clean_words_orders_equal_starts_by_end() -> None:
    words = clean_words([{"word": "b", "start": 1, "end": 3}, {"word": "a", "start": 1, "end": 2}])
    assert [w["word"] for w in words] == ["a", "b"]


def test_words_from_segments_gather_every_segments_words() -> None:
    first = [{"word": "hello", "start": 0, "end": 0.4}, {"word": "there", "start": 0.5, "end": 0.9}]
    segments = [
        {"text": "hello there", "words": first},
        {"text": "no words"},
        "junk",
        {"words": [{"word": "again", "start": 1.0, "end": 1.3}]},
    ]
    assert [w["word"] for w in words_from_segments(segments)] == ["hello", "there", "again"]


def test_srt_from_words_groups_lines_that_parse_back() -> None:
    words = words_from_characters(*align("The sea keeps its promise. Then night falls, slowly.", 0.05))
    srt = srt_from_words(words)
    assert srt == (
        "1\n00:00:00,000 --> 00:00:01,300\nThe sea keeps its promise.\n\n"  # a sentence ends a line
        "2\n00:00:01,350 --> 00:00:02,600\nThen night falls, slowly.\n"
    )
    assert media.parse_srt(srt) == [
        {"start": 0.0, "end": 1.3, "text": "The sea keeps its promise."},
        {"start": 1.35, "end": 2.6, "text": "Then night falls, slowly."},
    ]


def test_zero_length_words_still_make_a_valid_srt() -> None:
    words = clean_words([{"word": "Oh", "start": 1.0, "end": 0.5}, {"word": "no", "start": 4.0, "end": 4.0}])
    assert [(w["start"], w["end"]) for w in words] == [(1.0, 1.0), (4.0, 4.0)]  # clamped to zero length
    assert media.parse_srt(srt_from_words(words)) == [
        {"start": 1.0, "end": 1.001, "text": "Oh"},
        {"start": 4.0, "end": 4.001, "text": "no"},
    ]


def test_srt_timestamps_reach_hours() -> None:
    srt = srt_from_words([{"word": "late", "start": 3723.0456, "end": 3724.5}])
    assert "01:02:03,046 --> 01:02:04,500" in srt


def test_transcript_fields_and_write_srt(tmp_path: Path) -> None:
    words = clean_words([{"word": "Hi", "start": 0, "end": 0.3}, {"word": "there", "start": 0.4, "end": 0.8}])
    fields = transcript_fields(None, words, language="en", duration=1.0)
    assert fields["text"] == "Hi there" and fields["words"] == words and fields["language"] == "en"
    assert fields["segments"] == [{"start": 0.0, "end": 0.8, "text": "Hi there"}] and fields["duration"] == 1.0
    assert transcript_fields("  Hi there!  ", words)["text"] == "Hi there!"
    assert "language" not in transcript_fields("x", words) and "duration" not in transcript_fields("x", words)
    path = write_srt(tmp_path, words)
    assert path == tmp_path / "transcript.srt"
    assert media.parse_srt(path.read_text(encoding="utf-8")) == [{"start": 0.0, "end": 0.8, "text": "Hi there"}]


# --- properties ------------------------------------------------------------------------------------

_WORD = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789',.!?-"), min_size=1, max_size=12)


@st.composite
def timed_words(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Words in time order, from zero to 1.5 s long, with gaps from none to several seconds."""
    count = draw(st.integers(min_value=1, max_value=40))
    words, at = [], draw(st.integers(min_value=0, max_value=5000))  # milliseconds
    for _ in range(count):
        at += draw(st.integers(min_value=0, max_value=3000))
        length = draw(st.integers(min_value=0, max_value=1500))
        words.append({"word": draw(_WORD), "start": at / 1000, "end": (at + length) / 1000})
        at += length
    return words


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(timed_words())
def test_srt_round_trips_through_parse_srt(words: list[dict[str, Any]]) -> None:
    cleaned = clean_words(words)
    assert cleaned == words  # already clean: nothing dropped, nothing moved
    segments = media.parse_srt(srt_from_words(cleaned))
    expected = media.group_words(cleaned)
    assert [s["text"] for s in segments] == [g["text"] for g in expected]
    for got, want in zip(segments, expected, strict=True):
        assert got["start"] == pytest.approx(want["start"], abs=5e-4)
        assert got["end"] == pytest.approx(max(want["end"], want["start"] + 0.001), abs=5e-4)
    # every word is shown once, in order, while it is spoken
    assert " ".join(s["text"] for s in segments).split() == [w["word"] for w in cleaned]


@settings(max_examples=200)
@given(st.lists(st.one_of(_WORD, st.sampled_from([" ", "  ", "\n"])), max_size=30), st.floats(0.01, 0.5))
def test_words_from_characters_match_a_plain_split(pieces: list[str], step: float) -> None:
    text = "".join(pieces)
    words = words_from_characters(*align(text, step))
    assert [w["word"] for w in words] == text.split()
    for w in words:
        assert 0 <= w["start"] < w["end"] <= round(len(text) * step, 3) + 1e-9
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(words))
