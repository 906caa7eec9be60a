"""Optuna hyper-parameter sweeps of S²DC: a trial is a short pretraining plus a short fine-tuning from its encoder,
scored by the fine-tuning's validation score (maximised). N worker processes share one study.

One job per module: :mod:`.space` (the search space and its checks), :mod:`.spec` (a sweep's settings),
:mod:`.storage` (journal file or database), :mod:`.liveness` (heartbeats, dead workers, retries), :mod:`.worker`
(the global trial budget), :mod:`.objective` (the real trial), :mod:`.toy` (a cheap stand-in for tests and
rehearsals), :mod:`.export` (tables, best parameters, figures) and :mod:`.command` (``s2dc sweep``).
Nothing here is imported by the package's other stages; only the command line uses it.
"""
