"""The report stage: ``tables`` (the benchmark, probe and ablation tables), ``figures`` (per-class bars and
label-ratio curves of the fine-tuning runs) and ``curves`` (their DVCLive curves gathered per dataset for
``dvc plots``); the HTML pages of the tables come from :mod:`s2dc.pages`."""
