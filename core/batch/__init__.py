"""The batch layer under the offline commands: items from a folder or a manifest, one output per
item written atomically, a results manifest that a second run resumes from, and two ways to
run the items: a local process pool (``core.batch.local``) or a Ray cluster
(``core.batch.ray_pool``, imported only when asked for), chosen in ``core.batch.pool``, whose
``gather`` also serves jobs that hand values back (the eval harnesses). docs/batch.md describes it."""

from core.batch.items import Item, Job, folder_items, is_manifest, manifest_rows
from core.batch.pool import gather, placement, run_items
from core.batch.results import Plan, Result, Results, execute, plan, sweep_temporaries

__all__ = ["Item", "Job", "Plan", "Result", "Results", "execute", "folder_items", "gather", "is_manifest",
           "manifest_rows", "placement", "plan", "run_items", "sweep_temporaries"]
