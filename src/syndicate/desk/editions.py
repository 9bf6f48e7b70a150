"""One edition: pause and resume a send."""

from __future__ import annotations

from fastapi import Depends

from syndicate import editions, services
from syndicate.db import transaction
from syndicate.desk.core import back, csrf_checked, editor, pages
from syndicate.errors import InvalidInput
from syndicate.models import Edition


@pages.post("/editions/{edition_id}/{action}", dependencies=[Depends(csrf_checked)])
def edition_action(edition_id: int, action: str, name: str = Depends(editor)):
    from syndicate.tasks import deliver_batch

    svc = services.current()
    batches = []
    with transaction(svc.Session) as session:
        edition = session.get(Edition, edition_id)
        if edition is None:
            raise InvalidInput(f"no edition {edition_id}")
        if action == "pause":
            editions.pause(session, edition)
        elif action == "resume":
            batches = editions.resume(session, edition, svc.settings)
        else:
            raise InvalidInput(f"no edition action {action!r}")
    for batch in batches:  # after the commit: a worker must find the rows sending
        deliver_batch.delay(*batch)
    return back()
