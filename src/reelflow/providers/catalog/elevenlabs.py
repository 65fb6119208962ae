"""ElevenLabs' text-to-speech models, and the premade voices reachable by name without a lookup.

Prices are approximate public API list prices per character of input (late 2026) and only feed
estimates and reported costs; ElevenLabs bills the real amount (in credits, by plan).
"""

from __future__ import annotations

from .spec import ModelSpec, ParamSpec, Price

PREMADE_VOICES: dict[str, str] = {
    "rachel": "21m00Tcm4TlvDq8ikWAM",
    "domi": "AZnzlk1XvdvUeBnXmlld",
    "sarah": "EXAVITQu4vr4xnSDxMaL",
    "antoni": "ErXwobaYiN019PkySvjV",
    "elli": "MF3mGyEYCl7XYWbV9V6O",
    "josh": "TxGEqnHWrfWFTfGW9XjX",
    "arnold": "VR6AewLTigWG4xSOukaG",
    "adam": "pNInz6obpgDQGcFmaJgB",
    "sam": "yoZ06aMxZJJ28mfd3POQ",
    "aria": "9BWtsMINqrJLrRacOk9x",
    "roger": "CwhRBWXzGAHq8TQ4Fs17",
    "laura": "FGY2WhTYpPnrIDTdsKH5",
    "charlie": "IKne3meq5aSn9XLyUdCD",
    "george": "JBFqnCBsd6RMkjVDRZzb",
    "callum": "N2lVS1w4EtoT3dr4eOWO",
    "river": "SAz9YHcvj6GT2YYXdXww",
    "liam": "TX3LPaxmHKxFdv7VOQHJ",
    "charlotte": "XB0fDUnXU5powFXDhCwa",
    "alice": "Xb7hH8MSUJpSbSDYk0k2",
    "matilda": "XrExE9yKIg1WjnnlVkGX",
    "will": "bIHbv24MWmeRgasZH58o",
    "jessica": "cgSgspJ2msm6clMCkdW9",
    "eric": "cjVigY5qzO86Huf0OWal",
    "chris": "iP95p4xoKVk53GoZ742B",
    "brian": "nPczCjzI2devNBz1zQrb",
    "daniel": "onwK4e9ZLuTAKqWW03F9",
    "lily": "pFZP5JQG7iQjIQuC4Bku",
    "bill": "pqHfZKP75CvOlQylNhV4",
}
"""ElevenLabs' public premade voices, lower-cased name -> voice id (other names are looked up)."""

DEFAULT_VOICE = "Rachel"

_RESULT_NOTE = (
    " The result also carries `text` and `words` (word timings from ElevenLabs' character alignment),"
    " so a captions job can take `$<job>.words`."
)
_RUN_NOTE = " Also runs as `run` with ElevenLabs' own body (plus `voice_id` and `output_format`)."


_NOT_REREAD = "not re-read on ElevenLabs' pricing page in the 2026-12-06 check; a late-2026 list price"
"""Why these prices are unconfirmed (ElevenLabs bills credits by plan, so a USD price is an estimate anyway)."""


def _tts_model(
    name: str, usd_per_char: float, what: str, max_chars: int, est_seconds: float, *, unconfirmed: str | None
) -> ModelSpec:
    return ModelSpec(
        id=f"elevenlabs/{name}",
        provider="elevenlabs",
        name=name,
        types=["generate-audio", "run"],
        params={
            "text": ParamSpec(type="string", required=True, max_length=max_chars, description="Words to speak."),
            "voice": ParamSpec(
                type="string",
                default=DEFAULT_VOICE,
                description="A voice name (a premade voice such as Rachel, or one of the account's) or a voice id.",
            ),
            "seed": ParamSpec(
                type="integer", minimum=0, maximum=4294967295, description="Random seed, for repeatable output."
            ),
        },
        price=Price(unit="character", usd=usd_per_char),
        price_unconfirmed=unconfirmed,
        description=f"{what} (approximately ${usd_per_char * 1000:g} per 1000 characters).{_RESULT_NOTE}{_RUN_NOTE}",
        est_seconds=est_seconds,
    )


MODELS: list[ModelSpec] = [
    _tts_model(
        "eleven_multilingual_v2",
        0.0001,
        "ElevenLabs Multilingual v2, lifelike speech",
        10000,
        4.0,
        unconfirmed=_NOT_REREAD,
    ),
    _tts_model(
        "eleven_flash_v2_5", 0.00005, "ElevenLabs Flash v2.5, low-latency speech", 40000, 1.5, unconfirmed=_NOT_REREAD
    ),
]

MODELS_BY_ID: dict[str, ModelSpec] = {m.id: m for m in MODELS}
