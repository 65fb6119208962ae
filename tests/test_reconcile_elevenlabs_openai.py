"""Pay once, ElevenLabs and OpenAI: a synchronous call whose answer was lost is not paid for a second time.

ElevenLabs keeps every speech in the account's history, so a retry finds the lost one there and downloads it.
OpenAI has no such list; a retry repeats the first attempt's idempotency key, and (where the key is honoured,
as the fake does) gets the first answer back without paying again.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.elevenlabs import PREMADE, FakeElevenLabs, audio_for, speech_seconds
from fakes.openai import FakeOpenAI
from reelflow import media
from reelflow.providers.base import CannotReconcile, PermanentError, ProgressUpdate, Task, TransientError
from reelflow.providers.elevenlabs import HISTORY_PAGE_SIZE, HISTORY_SKEW_S, ElevenLabsProvider, alignment_words
from reelflow.providers.openai import OpenAIProvider

MULTI = "elevenlabs/eleven_multilingual_v2"
RACHEL = PREMADE["Rachel"]
ADAM = PREMADE["Adam"]
TEXT = "The tide comes in twice a day, and never late."
TTS = "openai/gpt-4o-mini-tts"
IMAGE = "openai/gpt-image-1"
WHISPER = "openai/whisper-1"


class Reports:
    def __init__(self) -> None:
        self.updates: list[ProgressUpdate] = []

    def __call__(self, update: ProgressUpdate) -> None:
        self.updates.append(update)


def attempt(
    tmp_path: Path,
    n: int,
    *,
    model: str = MULTI,
    job_type: str = "generate-audio",
    intent_at: float | None = None,
    intent_attempt: int | None = 1,
    resumed: bool = False,
    **params: Any,
) -> Task:
    """Attempt `n` of job `job1`; the job's first unsettled attempt was attempt `intent_attempt`, begun at
    `intent_at` (as the worker records them)."""
    t = Task(
        "ex1",
        "job1",
        job_type,
        model,
        params,
        n,
        scratch=tmp_path / f"attempt-{n}",
        intent_at=intent_at,
        intent_attempt=intent_attempt if intent_at is not None else None,
    )
    t.resumed = resumed
    return t


def routes(fake: FakeElevenLabs, route: str) -> list[Any]:
    return [e for e in fake.log if e.route == route]


# --- ElevenLabs: the history ----------------------------------------------------------------------


@pytest.fixture
def eleven() -> Iterator[FakeElevenLabs]:
    with FakeElevenLabs() as fake:
        yield fake


@pytest.fixture
async def p(eleven: FakeElevenLabs) -> AsyncIterator[ElevenLabsProvider]:
    provider = ElevenLabsProvider(eleven.key, eleven.base_url)
    provider.poll_initial_s = 0.05
    yield provider
    await provider.aclose()


async def lost_first_attempt(p: ElevenLabsProvider, eleven: FakeElevenLabs, tmp_path: Path) -> tuple[float, str]:
    """Attempt 1 speaks TEXT, ElevenLabs makes and bills it, and the answer is lost: (intent_at, local id)."""
    intent_at = time.time()
    first = attempt(tmp_path, 1, intent_at=intent_at, text=TEXT, voice="Rachel")
    assert not first.unsettled and not first.resumed  # nothing earlier: no lookup
    pid = await p.submit(first)
    eleven.accept_then_drop()
    with pytest.raises(TransientError) as lost:
        await p.wait(first, pid, Reports())
    assert lost.value.not_sent is False  # it may have been made (it was): the next attempt must look first
    assert eleven.creates == 1 and eleven.count("tts") == 1 and eleven.count("history") == 0
    return intent_at, pid


async def test_a_lost_speech_is_downloaded_from_the_history_not_paid_again(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    intent_at, pid = await lost_first_attempt(p, eleven, tmp_path)
    [made] = eleven.history
    retry = attempt(tmp_path, 2, intent_at=intent_at, resumed=True, text=TEXT, voice="Rachel")
    assert retry.unsettled and retry.idempotency_key == "reelflow-ex1-job1-1"
    result = await p.wait(retry, pid, Reports())
    assert eleven.creates == 1 and eleven.count("tts") == 1  # paid once
    assert eleven.count("history") == 1 and eleven.count("history-audio") == 1
    [listed] = routes(eleven, "history")
    assert listed.query == {
        "page_size": str(HISTORY_PAGE_SIZE),
        "voice_id": RACHEL,
        "model_id": "eleven_multilingual_v2",
        "date_after_unix": str(int(intent_at - HISTORY_SKEW_S)),
        "sort_direction": "asc",
        "source": "TTS",
    }
    [out] = result.outputs
    assert out.path is not None and out.content_type == "audio/mpeg" and out.path.suffix == ".mp3"
    assert out.path.read_bytes() == made.audio == audio_for(TEXT)  # the very audio that was paid for
    fields = result.fields
    assert fields["provider_id"] == pid and fields["history_item_id"] == made.history_item_id
    assert fields["request_id"] == made.request_id and fields["voice_id"] == RACHEL and fields["text"] == TEXT
    assert result.cost_usd is not None and result.cost_usd > 0  # the one charge, recorded once
    # the history kept no alignment: the words are spread over the real audio, and the result says so
    assert fields["words_source"] == "estimated"
    words = fields["words"]
    assert [w["word"] for w in words] == TEXT.split()
    duration = (await media.probe(out.path))["duration"]
    assert abs(duration - speech_seconds(TEXT)) < 0.15
    assert words[0]["start"] == 0 and words[-1]["end"] <= duration
    assert all(a["end"] <= b["start"] and a["start"] < a["end"] for a, b in itertools.pairwise(words))


async def test_a_history_that_kept_the_alignment_gives_the_real_word_timings(tmp_path: Path) -> None:
    with FakeElevenLabs(history_alignments=True) as eleven:
        p = ElevenLabsProvider(eleven.key, eleven.base_url)
        intent_at, pid = await lost_first_attempt(p, eleven, tmp_path)
        retry = attempt(tmp_path, 2, intent_at=intent_at, resumed=True, text=TEXT, voice="Rachel")
        result = await p.wait(retry, pid, Reports())
        await p.aclose()
    [made] = eleven.history
    assert eleven.creates == 1 and result.fields["words_source"] == "history"
    assert made.alignments is not None
    assert result.fields["words"] == alignment_words(made.alignments["alignment"])


async def test_only_the_same_speech_since_the_intent_is_adopted(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    """Another text, voice, model, source, format or an older item is someone else's speech: speak anew."""
    intent_at = time.time()
    now = int(intent_at)
    eleven.add_history(TEXT + " ", date_unix=now)  # one space more is another text
    eleven.add_history(TEXT.lower(), date_unix=now)
    eleven.add_history(TEXT, voice_id=ADAM, date_unix=now)
    eleven.add_history(TEXT, model_id="eleven_flash_v2_5", date_unix=now)
    eleven.add_history(TEXT, date_unix=now - int(HISTORY_SKEW_S) - 60)  # made before this job meant to
    eleven.add_history(TEXT, source="STS", date_unix=now)
    eleven.add_history(TEXT, content_type="audio/wav", date_unix=now)
    retry = attempt(tmp_path, 2, intent_at=intent_at, resumed=True, text=TEXT, voice="Rachel")
    assert await p.find_submitted(retry, intent_at) == []
    result = await p.wait(retry, f"tts-{'0' * 32}", Reports())
    assert eleven.creates == 1 and eleven.count("tts") == 1  # nothing fitted: spoken (and paid) now
    assert result.fields["words_source"] == "alignment" and "history_item_id" not in result.fields
    assert result.fields["request_id"] == eleven.history[-1].request_id
    # the control: the same speech, made in time, is adopted
    assert await p.find_submitted(retry, intent_at) == [f"tts-history-{eleven.history[-1].history_item_id}"]


async def test_the_voice_settings_given_must_be_the_ones_kept(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    intent_at = time.time()
    eleven.add_history(TEXT, date_unix=int(intent_at))  # the default settings: stability 0.5
    body = {"text": TEXT, "voice_id": RACHEL, "voice_settings": {"stability": 0.3, "style": 0.0}}
    retry = attempt(tmp_path, 2, intent_at=intent_at, resumed=True, job_type="run", input=body)
    assert await p.find_submitted(retry, intent_at) == []
    kept = {"stability": 0.3, "similarity_boost": 0.75, "style": 0.0, "use_speaker_boost": True, "speed": 1.0}
    same = eleven.add_history(TEXT, settings=kept, date_unix=int(intent_at))
    assert await p.find_submitted(retry, intent_at) == [f"tts-history-{same.history_item_id}"]


async def test_find_submitted_names_the_lost_speech_and_wait_takes_that_id(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    intent_at, _ = await lost_first_attempt(p, eleven, tmp_path)
    eleven.add_history("another job's words", date_unix=int(time.time()))
    [made, _other] = eleven.history
    retry = attempt(tmp_path, 2, intent_at=intent_at, text=TEXT, voice="Rachel")
    found = await p.find_submitted(retry, intent_at)
    assert found == [f"tts-history-{made.history_item_id}"]
    assert await p.find_submitted(retry, intent_at + HISTORY_SKEW_S + 5) == []  # it was made before then
    retry.resumed = True  # adopted by the worker, as after a restart
    result = await p.wait(retry, found[0], Reports())
    assert result.outputs[0].path is not None and result.outputs[0].path.read_bytes() == made.audio
    assert result.fields["provider_id"] == found[0] and result.fields["history_item_id"] == made.history_item_id
    assert eleven.creates == 1 and eleven.count("tts") == 1 and eleven.count("history-item") == 1
    other = attempt(tmp_path, 2, intent_at=intent_at, resumed=True, text="Some other words", voice="Rachel")
    with pytest.raises(TransientError, match="not this job's speech") as refused:  # an id that names other work
        await p.wait(other, found[0], Reports())
    assert refused.value.resubmit and eleven.creates == 1


async def test_identical_speeches_are_found_oldest_first_across_pages(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    intent_at = time.time()
    now = int(intent_at)
    first = eleven.add_history(TEXT, date_unix=now)
    for i in range(HISTORY_PAGE_SIZE + 30):  # a busy account: this voice said many things since
        eleven.add_history(f"line {i}", date_unix=now + 1)
    second = eleven.add_history(TEXT, date_unix=now + 2)
    retry = attempt(tmp_path, 2, intent_at=intent_at, text=TEXT, voice="Rachel")
    found = await p.find_submitted(retry, intent_at)
    assert found == [f"tts-history-{first.history_item_id}", f"tts-history-{second.history_item_id}"]
    pages = routes(eleven, "history")
    assert len(pages) == 2 and "start_after_history_item_id" not in pages[0].query
    assert pages[1].query["start_after_history_item_id"] == eleven.history[HISTORY_PAGE_SIZE - 1].history_item_id


async def test_a_late_answer_past_the_read_timeout_is_found_too(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    p.timeout = httpx.Timeout(connect=2.0, read=0.3, write=2.0, pool=2.0)
    intent_at = time.time()
    first = attempt(tmp_path, 1, intent_at=intent_at, text=TEXT, voice="Rachel")
    pid = await p.submit(first)
    eleven.accept_then_delay(delay_s=1.0)
    with pytest.raises(TransientError, match="timed out") as late:
        await p.wait(first, pid, Reports())
    assert late.value.not_sent is False and eleven.creates == 1
    retry = attempt(tmp_path, 2, intent_at=intent_at, text=TEXT, voice="Rachel")  # submitted anew: unsettled
    result = await p.wait(retry, await p.submit(retry), Reports())
    assert eleven.creates == 1 and eleven.count("tts") == 1
    assert result.outputs[0].path is not None and result.outputs[0].path.read_bytes() == audio_for(TEXT)


async def test_a_speech_still_processing_is_waited_for(tmp_path: Path) -> None:
    with FakeElevenLabs(history_processing_s=0.6) as eleven:
        p = ElevenLabsProvider(eleven.key, eleven.base_url)
        p.poll_initial_s = 0.1
        intent_at, pid = await lost_first_attempt(p, eleven, tmp_path)
        retry = attempt(tmp_path, 2, intent_at=intent_at, resumed=True, text=TEXT, voice="Rachel")
        result = await p.wait(retry, pid, Reports())
        await p.aclose()
    assert eleven.creates == 1 and result.fields["history_item_id"] == eleven.history[0].history_item_id
    assert eleven.count("history-item") >= 1  # looked again until it was created
    assert [e.status for e in routes(eleven, "history-audio")] == [200]


async def test_without_an_intent_or_an_earlier_attempt_the_history_is_not_read(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    eleven.add_history(TEXT, date_unix=int(time.time()))
    fresh = attempt(tmp_path, 1, intent_at=time.time(), text=TEXT, voice="Rachel")
    await p.wait(fresh, await p.submit(fresh), Reports())
    unknown = attempt(tmp_path, 2, resumed=True, text=TEXT, voice="Rachel")  # resumed, but since when?
    await p.wait(unknown, await p.submit(unknown), Reports())
    assert eleven.count("history") == 0 and eleven.creates == 2


async def test_a_history_that_cannot_be_read(eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path) -> None:
    """A busy history: retry later, paying nothing blind. A history the key may not read: speak again."""
    intent_at, pid = await lost_first_attempt(p, eleven, tmp_path)
    retry = attempt(tmp_path, 2, intent_at=intent_at, resumed=True, text=TEXT, voice="Rachel")
    eleven.fail_next("history", 1, 503)
    with pytest.raises(TransientError, match="HTTP 503") as busy:
        await p.wait(retry, pid, Reports())
    assert not busy.value.not_sent and eleven.creates == 1
    eleven.fail_next("history", 1, 500)
    with pytest.raises(TransientError):
        await p.find_submitted(retry, intent_at)
    no_permission = {"status": "missing_permissions", "message": "The API key lacks speech_history_read."}
    eleven.fail_next("history", 1, 401, detail=no_permission)
    with pytest.raises(CannotReconcile, match="speech_history_read"):
        await p.find_submitted(retry, intent_at)
    eleven.fail_next("history", 1, 401, detail=no_permission)
    result = await p.wait(retry, pid, Reports())
    assert eleven.creates == 2 and result.fields["words_source"] == "alignment"  # the possible duplicate


@pytest.mark.parametrize(("status", "not_sent"), [(429, True), (500, False), (503, False)])
async def test_a_refused_speech_says_whether_it_was_sent(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path, status: int, not_sent: bool
) -> None:
    if status == 429:
        eleven.throttle_next(retry_after=0)
    else:
        eleven.fail_next("tts", 1, status)
    t = attempt(tmp_path, 1, text=TEXT)
    with pytest.raises(TransientError) as info:
        await p.wait(t, await p.submit(t), Reports())
    assert info.value.not_sent is not_sent and eleven.creates == 0


async def test_the_fakes_history_follows_the_documented_list(eleven: FakeElevenLabs, tmp_path: Path) -> None:
    """Newest first by default, filters by date (after inclusive, before exclusive), search needs a source."""
    a = eleven.add_history("alpha", date_unix=100)
    b = eleven.add_history("beta", date_unix=200, voice_id=ADAM)
    c = eleven.add_history("gamma", date_unix=300)
    async with httpx.AsyncClient(base_url=eleven.base_url, headers={"xi-api-key": eleven.key}) as client:

        async def listed(**params: Any) -> Any:
            answer = await client.get("/history", params=params)
            assert answer.status_code == 200, answer.text
            return answer.json()

        page = await listed(page_size=2)
        assert [i["history_item_id"] for i in page["history"]] == [c.history_item_id, b.history_item_id]
        assert page["has_more"] is True and page["last_history_item_id"] == b.history_item_id
        assert page["scanned_until"] == 200
        rest = await listed(page_size=2, start_after_history_item_id=b.history_item_id)
        assert [i["text"] for i in rest["history"]] == ["alpha"] and rest["has_more"] is False
        assert [i["text"] for i in (await listed(date_after_unix=200, date_before_unix=300))["history"]] == ["beta"]
        assert [i["text"] for i in (await listed(voice_id=RACHEL, sort_direction="asc"))["history"]] == [
            "alpha",
            "gamma",
        ]
        assert (await client.get("/history", params={"search": "alp"})).status_code == 422
        assert [i["text"] for i in (await listed(search="ALP", source="TTS"))["history"]] == ["alpha"]
        assert (await client.get("/history", params={"page_size": 1001})).status_code == 422
        item = (await client.get(f"/history/{a.history_item_id}")).json()
        assert {k: item[k] for k in ("text", "voice_id", "voice_name", "state", "content_type")} == {
            "text": "alpha",
            "voice_id": RACHEL,
            "voice_name": "Rachel",
            "state": "created",
            "content_type": "audio/mpeg",
        }
        assert (await client.get(f"/history/{a.history_item_id}/audio")).content == a.audio
        assert (await client.get("/history/nope/audio")).status_code == 404


# --- OpenAI: the idempotency key ------------------------------------------------------------------


@pytest.fixture
def oai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def op(oai: FakeOpenAI) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(oai.key, oai.base_url)
    yield provider
    await provider.aclose()


def speech(tmp_path: Path, n: int, **kwargs: Any) -> Task:
    return attempt(tmp_path, n, model=TTS, text="Hello from the sea.", voice="nova", **kwargs)


async def test_a_lost_speech_retried_with_the_same_key_is_paid_once(
    oai: FakeOpenAI, op: OpenAIProvider, tmp_path: Path
) -> None:
    intent_at = time.time()
    first = speech(tmp_path, 1, intent_at=intent_at)
    oai.accept_then_drop()
    with pytest.raises(TransientError) as lost:
        await op.wait(first, await op.submit(first), Reports())
    assert lost.value.not_sent is False and oai.paid["speech"] == 1
    retry = speech(tmp_path, 2, intent_at=intent_at)
    assert retry.unsettled and retry.idempotency_key == first.idempotency_key == "reelflow-ex1-job1-1"
    with pytest.raises(CannotReconcile, match="reelflow-ex1-job1-1"):
        await op.find_submitted(retry, intent_at)  # nothing to look in: the worker goes ahead, with the key
    result = await op.wait(retry, await op.submit(retry), Reports())
    assert oai.paid["speech"] == 1 and oai.replays == 1 and oai.count("speech") == 2
    assert [e.idempotency_key for e in oai.log if e.route == "speech"] == ["reelflow-ex1-job1-1"] * 2
    [out] = result.outputs
    assert out.path is not None and out.path.read_bytes() == oai.media["mp3"]
    info = await media.probe(out.path)
    assert info["has_audio"] and info["duration"] > 0.5


async def test_without_the_same_key_the_retry_is_paid_twice(
    oai: FakeOpenAI, op: OpenAIProvider, tmp_path: Path
) -> None:
    """The control: the key, not the fake, is what saves the second charge."""
    first = speech(tmp_path, 1, intent_at=time.time())
    oai.accept_then_drop()
    with pytest.raises(TransientError):
        await op.wait(first, await op.submit(first), Reports())
    retry = speech(tmp_path, 2)  # a job that forgot its intent: the key names attempt 2
    assert retry.idempotency_key == "reelflow-ex1-job1-2"
    await op.wait(retry, await op.submit(retry), Reports())
    assert oai.paid["speech"] == 2 and oai.replays == 0


async def test_a_late_speech_retried_with_the_same_key_is_paid_once(
    oai: FakeOpenAI, op: OpenAIProvider, tmp_path: Path
) -> None:
    op.timeout = httpx.Timeout(connect=2.0, read=0.3, write=2.0, pool=2.0)
    intent_at = time.time()
    first = speech(tmp_path, 1, intent_at=intent_at)
    oai.accept_then_delay(delay_s=1.0, route="speech")
    with pytest.raises(TransientError, match="timed out") as late:
        await op.wait(first, await op.submit(first), Reports())
    assert late.value.not_sent is False and oai.paid["speech"] == 1
    retry = speech(tmp_path, 2, intent_at=intent_at)  # while the first answer is still on its way
    result = await op.wait(retry, await op.submit(retry), Reports())
    assert oai.paid["speech"] == 1 and oai.replays == 1
    assert result.outputs[0].path is not None and result.outputs[0].path.read_bytes() == oai.media["mp3"]


async def test_lost_images_and_transcriptions_are_paid_once_too(
    oai: FakeOpenAI, op: OpenAIProvider, tmp_path: Path
) -> None:
    intent_at = time.time()
    audio = tmp_path / "voice.mp3"
    audio.write_bytes(oai.media["mp3"])

    def image(n: int) -> Task:
        return attempt(tmp_path, n, model=IMAGE, job_type="generate-image", intent_at=intent_at, prompt="a gull")

    def words(n: int) -> Task:
        t = attempt(tmp_path, n, model=WHISPER, job_type="transcribe", intent_at=intent_at, audio="http://h/a.mp3")
        t.job_id = "job2"
        t.inputs["audio"] = audio
        return t

    for make, route in ((image, "images"), (words, "transcriptions")):
        oai.accept_then_drop(route=route)
        with pytest.raises(TransientError):
            await op.wait(make(1), await op.submit(make(1)), Reports())
        result = await op.wait(make(2), await op.submit(make(2)), Reports())
        assert oai.paid[route] == 1 and oai.count(route) == 2, route
        assert result.outputs and all(o.path is not None and o.path.stat().st_size > 0 for o in result.outputs)
    # the two form uploads had different multipart boundaries, yet were the same request
    assert oai.replays == 2 and len(oai.transcriptions) == 1 and oai.creates == 2


async def test_the_same_key_for_another_request_is_refused(oai: FakeOpenAI, op: OpenAIProvider, tmp_path: Path) -> None:
    first = speech(tmp_path, 1, intent_at=time.time())
    await op.wait(first, await op.submit(first), Reports())
    changed = attempt(tmp_path, 2, model=TTS, intent_at=first.intent_at, text="Other words.", voice="nova")
    assert changed.idempotency_key == first.idempotency_key
    with pytest.raises(PermanentError, match=r"HTTP 400: .*reelflow-ex1-job1-1.*idempotency_key_mismatch"):
        await op.wait(changed, await op.submit(changed), Reports())
    assert oai.paid["speech"] == 1 and oai.replays == 0


@pytest.mark.parametrize(("status", "not_sent"), [(429, True), (500, False), (503, False)])
async def test_openai_refusals_say_whether_anything_was_sent(
    oai: FakeOpenAI, op: OpenAIProvider, tmp_path: Path, status: int, not_sent: bool
) -> None:
    oai.fail_next("speech", 1, status, retry_after=0)
    t = speech(tmp_path, 1)
    with pytest.raises(TransientError) as info:
        await op.wait(t, await op.submit(t), Reports())
    assert info.value.not_sent is not_sent and oai.paid["speech"] == 0


async def test_an_image_job_cannot_be_reconciled_either(oai: FakeOpenAI, op: OpenAIProvider, tmp_path: Path) -> None:
    t = attempt(tmp_path, 2, model="openai/gpt-image-1", job_type="generate-image", intent_at=time.time(), prompt="x")
    with pytest.raises(CannotReconcile):
        await op.find_submitted(t, time.time())
    assert sum(oai.hits.values()) == 0
