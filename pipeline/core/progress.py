"""Progress for long work: a tqdm bar with an ETA on a terminal; plain lines with an ETA elsewhere (make, CI and
nohup logs), where a redrawn bar would only fill the log with carriage returns."""

import sys
import time


class Progress:
    """Count `total` units of work. Off a terminal, print a line every `every` seconds, or every tenth of the work
    when `every` is None but, after the first, not more often than every MIN_SECONDS (a short job prints its first
    and last lines only).
    Keyword arguments to `update` (loss, words/s, ...) are shown beside the count."""

    MIN_SECONDS = 5.0

    def __init__(self, total: int, desc: str, every: float | None = None, done: int = 0):
        # done: units finished before this process (a resumed epoch); the ETA counts only this process's pace
        self.total, self.desc, self.every, self.done, self.first = total, desc, every, done, done
        self.start = self.last = time.perf_counter()
        self.bar, self.step = None, max(1, total // 10)
        self.next = self.first_next = (done // self.step + 1) * self.step  # `every` None: print when done reaches it
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=f"  {desc}", leave=False)

    def update(self, n: int = 1, **info) -> None:
        self.done += n
        if self.bar is not None:
            if info:
                self.bar.set_postfix(info, refresh=False)
            self.bar.update(n)
            return
        now = time.perf_counter()
        if self.every is not None:
            due = now - self.last >= self.every
        else:
            first = self.next == self.first_next  # the first tenth always shows, so a log says the work started
            due = self.done >= self.next and (first or now - self.last >= self.MIN_SECONDS)
            while self.next <= self.done:  # updates of n > 1 units may jump past a tenth
                self.next += self.step
        if due or self.done == self.total:
            self.last = now
            eta = (now - self.start) / max(self.done - self.first, 1) * max(self.total - self.done, 0)
            shown = "".join(f"  {k} {v}" for k, v in info.items())
            print(f"  {self.desc} {self.done}/{self.total}{shown}  {now - self.start:.0f}s, ETA {eta:.0f}s", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
