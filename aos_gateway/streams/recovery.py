"""Faust's table recovery, with the stream partitions seeked before any of their records is delivered.

Found by the fault suite (worker ``kill -9``, restart; ``DEVLOG=1`` shows it): when a worker with
tables finishes recovery, faust-streaming's ``Recovery.on_recovery_completed`` resumes the stream
partitions *while the consumer's flow is still running* (it was resumed to read the changelogs) and
only then seeks them to their committed offsets and resumes flow control. Records fetched in that
window are handed to the streams and advance the consumer's read offsets; ``flow_control.resume()``
then clears the stream queues they sat in, and when the same records are fetched again after the
seek the consumer drops them as already read (``DROPPED MESSAGE ROFF``). A later record on the
partition then opens a "gap" that Faust counts as acknowledged, so the offsets are committed past
records that were never processed: tasks lost, silently.

:class:`OrderedRecovery` stops the consumer's flow (and flow control) first, so nothing is
delivered until the seek is done; the rest is Faust's own method, which resumes both.
:class:`AosTableManager` builds it; the app sets ``TableManager`` to it.
"""

from __future__ import annotations

from faust.tables import TableManager
from faust.tables.recovery import Recovery


class OrderedRecovery(Recovery):
    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        consumer.stop_flow()  # the fetch loop hands over nothing more ...
        self.app.flow_control.suspend()  # ... and the streams take nothing more
        await super().on_recovery_completed(generation_id)  # resume partitions, seek, resume flow


class AosTableManager(TableManager):
    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = OrderedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
