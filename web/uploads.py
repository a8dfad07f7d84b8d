"""Who may upload, and how much the server keeps.

Streamlit accepts a file upload from any open websocket session, signed in or
not, and keeps every file in memory until the session ends: 200 uploads of
1 MB from a session that never signed in took the server from 96 to 296 MB.
The UI has one uploader (a spec file), so only signed-in sessions may upload
and each keeps its newest file only. The guard is put in place by the first
page view after the server starts.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from starlette.exceptions import HTTPException
from streamlit import runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

log = logging.getLogger("lorafarm.web")

_allowed: set[str] = set()  # ids of sessions that have signed in
_installing = threading.Lock()


def allow_this_session() -> None:
    """The running session has signed in (or no password is set): it may upload."""
    ctx = get_script_run_ctx()
    if ctx is not None:
        _allowed.add(ctx.session_id)


def guard_uploads() -> None:
    """Put the guard on the server's upload store, once per process. Streamlit's
    upload route holds that store, so the guard wraps its method in place."""
    if not runtime.exists():
        return
    manager: Any = runtime.get_instance().uploaded_file_mgr
    with _installing:
        if getattr(manager, "_lorafarm_guarded", False):
            return
        add_file = manager.add_file

        def guarded_add_file(session_id: str, file: Any) -> None:
            if session_id not in _allowed:
                log.warning("upload refused: session %s has not signed in", session_id[:8])
                raise HTTPException(status_code=403, detail="sign in to upload")
            manager.remove_session_files(session_id)  # one spec file at a time
            add_file(session_id, file)

        manager.add_file = guarded_add_file
        manager._lorafarm_guarded = True
