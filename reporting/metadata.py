"""What the report says about the code it was built from: the git commit and the
repository's address (the machine's description is utils.machine_description)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]


def git(*args: str) -> str | None:
    """git's output in this repository; None where git is missing or fails (not a clone)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def commit() -> str | None:
    """HEAD's short hash, marked when the working tree has uncommitted changes."""
    head = git("rev-parse", "--short", "HEAD")
    # --no-optional-locks: a report must not rewrite the repository's index.
    dirty = git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
    return f"{head} (uncommitted changes)" if head and dirty else head


def repository_url() -> str | None:
    """origin as a browsable https address, without any credentials it may carry."""
    url = git("remote", "get-url", "origin")
    if not url:
        return None
    ssh = re.fullmatch(r"[\w.-]+@([\w.-]+):(.+)", url)
    if ssh:
        url = f"https://{ssh.group(1)}/{ssh.group(2)}"
    parts = urlsplit(url)
    url = urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))
    return url.removesuffix(".git")
