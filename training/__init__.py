"""Training and research for scorebridge's models (torch): data builds, training, export,
evaluation harnesses and experiments. Not part of the installed package; run from a clone
with the ``train`` extra (``training/README.md``)."""
