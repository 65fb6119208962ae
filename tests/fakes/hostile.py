"""Hostile answers a fake provider can give (issue 12): any bytes under any declared content type, and
redirects elsewhere, served at `/hostile/<name>` on the fake's own origin, without credentials (as a
provider's file host serves its outputs).

    fake.hostile.serve("clip.mp4", playlist_naming("file:///etc/passwd"), "video/mp4")
    fake.hostile.redirect("moved.mp4", "http://127.0.0.1:9/secret")
    fake.output_override = f"{fake.origin}/hostile/moved.mp4"
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from starlette.responses import Response


@dataclass
class HostileRoutes:
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    """Requests per name."""

    def serve(self, name: str, body: bytes, content_type: str) -> None:
        """`/hostile/<name>` answers `body`, declared as `content_type`."""
        self.files[name] = (body, content_type)

    def redirect(self, name: str, to: str) -> None:
        """`/hostile/<name>` answers 302 to `to`."""
        self.redirects[name] = to

    def response(self, name: str) -> Response:
        self.hits[name] += 1
        if name in self.redirects:
            return Response(status_code=302, headers={"location": self.redirects[name]})
        if name in self.files:
            body, content_type = self.files[name]
            return Response(body, media_type=content_type)
        return Response(b"not found", status_code=404, media_type="text/plain")


def playlist_naming(*targets: str) -> bytes:
    """An HLS playlist whose segments are `targets` (a `file:///` path, an internal URL...)."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:1", "#EXT-X-MEDIA-SEQUENCE:0"]
    for target in targets:
        lines += ["#EXTINF:1.0,", target]
    lines.append("#EXT-X-ENDLIST")
    return ("\n".join(lines) + "\n").encode()
