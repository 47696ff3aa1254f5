"""``python -m t5electra ...`` and ``torchrun --nproc_per_node N -m t5electra pretrain ...``: the
``t5electra`` command (t5electra/cli.py), as ``-m t5electra.cli`` runs it."""

import sys

from .cli import main

sys.exit(main())
