"""The names the loss options accept (no torch import: the workflow checks parameters with them at start)."""

SCOPES = ("volume", "slice")
ASSIGNMENTS = ("dual_softmax", "sinkhorn")
P2P_FORMS = ("positive", "positive_negative")
P2S_FORMS = ("release", "poster")
SPREADS = ("std", "variance")
