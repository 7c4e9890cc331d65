"""Training-health monitor: name the pathology while the run is still young.

::

    mon = convdoctor.Monitor(model, num_classes=10)
    for x, y in loader:
        out = model(x); loss = criterion(out, y)
        opt.zero_grad(); loss.backward()
        mon.step(loss=loss, outputs=out, targets=y, optimizer=opt)   # after backward, before opt.step()
        opt.step()
    print(mon.end_epoch(val_loss=..., val_acc=...))                  # one summary line
    mon.findings                                                     # newest last

``step`` only records (see :mod:`.stats`); every ``SYNC_EVERY`` steps the record is read
back once and the pure rules of :mod:`.rules` judge it. A finding fires once per episode:
while its rule keeps firing it is not repeated, and it can fire again only after the rule
has been quiet for ``EPISODE_GAP`` steps. Root cause first: a finding that is a side effect
of another (computed from NaN weights, or a known consequence such as a loss at chance behind
dead units) is attached to that finding under ``evidence["consequences"]``, not reported.

Where each part lives: :mod:`.core` (:class:`Monitor`: recording, episodes, root cause,
``state_dict``), :mod:`.stats` and :mod:`.window` (what a step records and the windows the
rules read), :mod:`.rules` (one pure rule per finding), :mod:`.hooks`, :mod:`.histograms`,
:mod:`.init_probe`, :mod:`.bn_drift` (what is measured), :mod:`.ddp` and :mod:`.shard`
(distributed runs), :mod:`.tensorboard` and :mod:`.lightning` (adapters), :mod:`._report`
(a report back from its JSON).
"""

from __future__ import annotations

from ._report import report_from_json
from .core import EPISODE_GAP, Monitor
from .rules import list_rules
from .stats import SYNC_EVERY

__all__ = ["EPISODE_GAP", "SYNC_EVERY", "Monitor", "list_rules", "report_from_json"]
