"""The batch layer under the offline commands: items from a folder or a manifest, one output per
item written atomically, a results manifest that a second run resumes from, and two ways to
run the items: a local process pool (``core.batch.local``) or a Ray cluster
(``core.batch.ray_pool``, imported only when asked for). docs/batch.md describes it."""

from core.batch.items import Item, Job, folder_items, is_manifest, manifest_rows
from core.batch.results import Plan, Result, Results, execute, plan, sweep_temporaries

__all__ = ["Item", "Job", "Plan", "Result", "Results", "execute", "folder_items", "is_manifest", "manifest_rows",
           "plan", "sweep_temporaries"]
