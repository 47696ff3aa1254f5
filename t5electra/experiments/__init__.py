"""Paper-reproduction experiments: ``t5electra experiment NAME`` (grid.py: the YAML and its jobs;
adapters.py: one per recipe; flops.py: the FLOPs count; runner.py: resumable runs; report.py:
Markdown + plots; quickstart_seeds.py: the quickstart over seeds against no pretraining). See
docs/experiments/README.md."""
