"""Scratch folders for a worker's attempts, reused instead of made and removed for each one.

A folder made for an attempt and removed after it cost ~0.3 ms of CPU and over 1 ms of the event loop's time
on ext4 (the rmdir alone), for every job that downloads its output. A worker instead keeps the folders of its
attempts that succeeded: emptied (their files unlinked), a later attempt gets one. Each attempt still sees a
private, empty folder (Task.workdir's contract), and nothing is left behind: the worker removes its folders
when it stops.

A folder is reused only after its attempt ended well: an attempt that failed, timed out or was cancelled may
have left work going (a thread still writing a file into it), so its folder is removed and its name retired.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

KEEP = 1024
"""At most this many emptied folders are kept for reuse (more in use at once are made, then removed)."""
LOOK_EVERY = 256
"""Folders whose attempts did not touch them are looked at together, once this many were given back."""


class ScratchPool:
    """The scratch folders of one worker, all under `root` (one folder per worker: `<workroot>/<worker id>`)."""

    def __init__(self, root: Path, keep: int = KEEP, look_every: int = LOOK_EVERY) -> None:
        self.root = root
        self.keep = keep
        self.look_every = look_every
        self._free: list[Path] = []
        self._made = 0
        self._unlooked: list[Path] = []
        """Folders given back untouched, not looked at yet (see `give_back`)."""

    def take(self) -> Path:
        """A folder for one attempt: an emptied one, or a new name (made on first use by Task.workdir)."""
        if self._free:
            return self._free.pop()
        self._made += 1
        return self.root / f"a{self._made}"

    def give_back(self, path: Path, *, reuse: bool, touched: bool = True) -> None:
        """The attempt using `path` ended: empty it for the next attempt when `reuse` (the attempt ended well),
        otherwise remove it and never hand its name out again.

        `touched=False`: the worker made nothing there (the attempt never asked for its `Task.workdir` and fetched
        no input into it), as with most remote jobs. Such folders are looked at together, `look_every` at a time,
        with one listing of the root (`_look`): a look of its own was a system call per job, which hands the GIL
        to the store's thread and leaves the event loop waiting to get it back. Until then they are not handed
        out."""
        if reuse and not touched:
            self._unlooked.append(path)
            if len(self._unlooked) >= self.look_every:
                self._look()
            return
        if not reuse:
            shutil.rmtree(path, ignore_errors=True)
            return
        try:
            entries = os.scandir(path)
        except FileNotFoundError:  # never made: the name is as good as new (and, the pool full, nothing to remove)
            if len(self._free) < self.keep:
                self._free.append(path)
            return
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            return
        emptied = True
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
                except OSError:
                    emptied = False
        if emptied:
            self._keep(path)
        else:  # something stayed: no other attempt may see it
            shutil.rmtree(path, ignore_errors=True)

    def _look(self) -> None:
        """The untouched folders given back, at once: a name the root does not hold is as good as new; a folder
        there all the same (made by hand, from `Task.scratch`) is emptied, or removed, as any other."""
        paths, self._unlooked = self._unlooked, []
        try:
            there = set(os.listdir(self.root))
        except FileNotFoundError:  # no attempt made a folder yet
            there = set()
        except OSError:  # cannot tell: each is looked at on its own
            there = {p.name for p in paths}
        for path in paths:
            if path.name in there:
                self.give_back(path, reuse=True)
            elif len(self._free) < self.keep:
                self._free.append(path)

    def _keep(self, path: Path) -> None:
        if len(self._free) < self.keep:
            self._free.append(path)
        else:
            shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        """Remove every folder (the worker stops); folders still in use go too."""
        self._free.clear()
        self._unlooked.clear()
        shutil.rmtree(self.root, ignore_errors=True)


__all__ = ["ScratchPool"]
