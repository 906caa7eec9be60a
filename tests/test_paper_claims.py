"""What README.md and docs/ attribute to the paper or the poster is what the sources say (seed-poster.txt and
method.md in the project's reference; the registry holds the poster's numbers)."""

from __future__ import annotations

import re

from s2dc.data import registry

from conftest import REPO


def test_the_readmes_ablation_table_quotes_poster_table_2():
    """README's ablation example: the poster columns are Table 2's BTCV / AutoPET Dice of the row with the same loss
    terms (L_g 83.43 / 45.72, + L_p2p 83.98 / 45.85, + L_p2s 84.02 / 46.23, all three 84.14 / 46.47), none for
    Sinkhorn (the poster prints no such row)."""
    rows = re.findall(r"^  \| (\w+) \| [^|]+ \| [^|]+ \| ([\d.—]+)(?: \(#\d\))? \| [^|]+ \| ([\d.—]+)(?: \(#\d\))? \|$",
                      (REPO / "README.md").read_text(), flags=re.MULTILINE)
    quoted = {name: (btcv, autopet) for name, btcv, autopet in rows}
    assert set(quoted) == {"lg", "lg_p2p", "lg_p2s", "s2dc", "sinkhorn"}
    for name, (btcv, autopet) in quoted.items():
        expected = [registry.get(d).paper_score(name, 1.0) for d in ("btcv", "autopet")]
        if name == "sinkhorn":
            assert (btcv, autopet) == ("—", "—")
        else:
            assert [float(btcv), float(autopet)] == expected, name

