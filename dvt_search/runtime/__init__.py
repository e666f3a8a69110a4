"""The distributed search: the only room of dvt-search that imports Ray.

Modules (nothing is imported here, so ``import dvt_search.runtime`` stays cheap):

* :mod:`.cli` — ``dvt-search search`` (argument parsing only).
* :mod:`.options` — the command's options and their resolution.
* :mod:`.driver` — connects, then runs one Tune experiment per family; :mod:`.rundir` — the run
  directory's files, resume checks and per-family bookkeeping.
* :mod:`.concurrent` — every family's experiment at once, one ``num_cpus=0`` Ray actor per experiment;
  the driver keeps ``run.json`` and prints one progress line over all families.
* :mod:`.group` — the ``direct`` GPU families searched at once share one Tune experiment (each with its
  own limiter, searcher, ASHA and records), so a trial's process runs the next trial of any of them.
* :mod:`.tuning` — one family's Tuner: resources, ASHA, the searcher, fresh start or ``Tuner.restore``.
* :mod:`.searcher` — a Tune ``Searcher`` over a persistent Optuna study (ask/tell, PRUNED for
  scheduler-stopped trials).
* :mod:`.trainable` — the Tune function of every trial; Ray Train DDP for CNN trials when asked.
* :mod:`.checkpoints` — the per-trial checkpoint store of ``direct`` trials.
* :mod:`.callbacks` — driver-side records (:class:`dvt_search.rundir.layout.RunDir`) and progress lines.
* :mod:`.console` — what the processes print: Tune's banners and Optuna's INFO lines held back around each
  experiment, one log line per finished epoch in trial processes.
* :mod:`.setup` — the plain-data per-trial settings and the per-process dataset cache.
* :mod:`.prewarm` — one SIFT descriptor extraction before the SIFT search.
* :mod:`.cluster` — connecting to Ray (local with a loopback dashboard, or ``--address``), shared-storage
  check; :mod:`.capacity` — what the cluster can hold (autoscaler node types x max workers, else the nodes
  alive): concurrency and feasibility, checked before the run directory is created.

Measured (figures from ``bench/``): on 2 shared CPU cores a ``direct`` trial costs ~4.5-8 s beyond its own
fit and a ``ray-train`` trial (a TorchTrainer launch) ~16 s, so ``--trainer auto`` uses Ray Train only for
several workers; on one H100 (multitask U-Net, 512^2, batch 32)
a Ray Train trial trains at 95% of the raw engine's img/s but costs ~40 s per trial, and four 0.25-GPU
trials (batch 8) together train 2.1x as many img/s as one.
"""
