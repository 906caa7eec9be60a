"""Which version of s2dc's code made a result, and that the results the tables compare share one.

A fine-tuning's metrics.json records ``code``, the hash of the fine-tuning code that made it (its run identity's:
:func:`s2dc.fingerprint.code_fingerprint` of the engine and all it imports), and a probe result that of the probe
code. The results of one dataset are compared with each other (its methods, label ratios and seeds; its probe rows),
so one version must make them all, and so must the datasets the averages over datasets take together, and those whose
verdicts the counts under *Does pretraining show?* tally together (:mod:`.effect`); a result that records no code was
written by an s2dc older than the record, whose version cannot be told.
"""

from __future__ import annotations

import re

from ..fingerprint import code_fingerprint

#: The module whose code (with all it imports) each kind of result records the hash of.
MODULES = {"fine-tuning": "s2dc.downstream.engine", "probe": "s2dc.eval.probe"}
#: How a result of each kind is made again (``{}``: which).
AGAIN = {"fine-tuning": "run {} again", "probe": "probe {} again"}
#: How the workflow deals with results of another version.
WORKFLOW = "the workflow reruns every job whose code changed"
_HASH = re.compile(r"[0-9a-f]{64}")


def current_code(kind: str) -> str:
    """The hash of this s2dc's code of ``kind`` (``fine-tuning`` or ``probe``): what a result it made now records."""
    return code_fingerprint(MODULES[kind])


def check_code(code, kind: str) -> None:
    """Raise ValueError (its caller names the file) unless ``code``, a result's ``code`` (None where it has none), is
    the hash of the ``kind`` code that made it."""
    if code is None:
        again = AGAIN[kind].format("it") + " with this s2dc"
        raise ValueError(f"it records no code (the hash of the {kind} code that made it): an s2dc older than that "
                         f"record wrote it, and which version made it cannot be told; {again} ({WORKFLOW}, so it "
                         "reruns every result of an older s2dc)")
    if not (isinstance(code, str) and _HASH.fullmatch(code)):
        raise ValueError(f"code is {code!r}; expected the SHA-256 (64 hex digits) of the {kind} code that made it")


def refuse_two_versions(kind: str, first: tuple[str, str], other: tuple[str, str], compared: str) -> None:
    """Raise ValueError naming the two results (``(path, code)`` each) made by two versions of the ``kind`` code,
    both versions, why they may not meet (``compared``) and which to make again: the one that is not of this s2dc's
    code, or, where neither is, all of them (or the older one)."""
    (a, code_a), (b, code_b) = first, other
    stale = [path for path, code in (first, other) if code != current_code(kind)]
    if len(stale) == 1:
        advice = f"'{stale[0]}' is not of this s2dc's code: {AGAIN[kind].format('it')} with this s2dc"
    else:
        again = AGAIN[kind]
        advice = (f"neither is of this s2dc's code: {again.format('all of them')} with this s2dc (or "
                  f"{again.format('the older one')} with the version that made the other)")
    raise ValueError(f"'{a}' and '{b}' were made by two versions of s2dc's {kind} code ({code_a[:12]}… and "
                     f"{code_b[:12]}…): {compared}, so one version must make them all; {advice} ({WORKFLOW})")


def check_one_version(kind: str, made: dict[str, tuple[str, str]], compared: str) -> None:
    """Raise ValueError unless the datasets of ``made`` (``{dataset: (a file of its results, code)}``, each dataset's
    results of one version) were made by one version of the ``kind`` code: it names each version with its datasets
    and a file of each, why they may not meet (``compared``) and which to make again: the datasets not of this
    s2dc's code, or, where none is, all of them (or the older ones)."""
    versions: dict[str, list[str]] = {}
    for dataset, (_, code) in sorted(made.items()):
        versions.setdefault(code, []).append(dataset)
    if len(versions) < 2:
        return
    which = "; ".join(f"{code[:12]}…: {', '.join(names)} (e.g. '{made[names[0]][0]}')"
                      for code, names in versions.items())
    current = current_code(kind)
    stale = [name for code, names in versions.items() if code != current for name in names]
    again = AGAIN[kind]
    if len(stale) < len(made):
        advice = f"the results of {', '.join(stale)} are not of this s2dc's code: {again.format('them')} with this s2dc"
    else:
        advice = (f"none is of this s2dc's code: {again.format('all of them')} with this s2dc (or "
                  f"{again.format('the older ones')} with the version that made the others)")
    count = "two" if len(versions) == 2 else len(versions)
    raise ValueError(f"the datasets {', '.join(sorted(made))} were made by {count} versions of s2dc's {kind} code "
                     f"({which}): {compared}, so one version must make them all; {advice} ({WORKFLOW})")
